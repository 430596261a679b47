package objectstore

import (
	"testing"

	"github.com/csefs/csefs/e2e/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
