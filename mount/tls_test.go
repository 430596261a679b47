package mount

import (
	"strings"
	"testing"
)

func TestCheckEndpoints(t *testing.T) {
	for _, k := range []string{"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_KMS"} {
		t.Setenv(k, "")
	}
	for _, tc := range []struct {
		cfg Config
		env string
		bad string
	}{
		{cfg: Config{EndpointURL: "http://127.0.0.1:9000", KMSEndpointURL: "http://localhost:8080"}},
		{cfg: Config{EndpointURL: "http://[::1]:9000"}},
		{cfg: Config{EndpointURL: "https://s3.example.com"}},
		{cfg: Config{EndpointURL: "http://s3.example.com"}, bad: "S3 endpoint http://s3.example.com"},
		{cfg: Config{EndpointURL: "http://s3.example.com", AllowHTTP: true}},
		{cfg: Config{KMSEndpointURL: "http://10.0.0.5:4566"}, bad: "KMS endpoint http://10.0.0.5:4566"},
		{env: "http://minio.internal:9000", bad: "S3 endpoint http://minio.internal:9000"},
		{cfg: Config{EndpointURL: "https://s3.example.com", KMSEndpointURL: "https://kms.example.com"}, env: "http://minio.internal:9000"},
		{cfg: Config{EndpointURL: "http://127.0.0.1:9000", SSE: "c"}, bad: "SSE-C sends its key"},
		{cfg: Config{EndpointURL: "http://s3.example.com", SSECKeyFile: "k", AllowHTTP: true}, bad: "SSE-C sends its key"},
	} {
		t.Setenv("AWS_ENDPOINT_URL", tc.env)
		err := checkEndpoints(tc.cfg)
		if tc.bad == "" && err != nil || tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)) {
			t.Errorf("endpoints %q %q env %q: err = %v, want %q", tc.cfg.EndpointURL, tc.cfg.KMSEndpointURL, tc.env, err, tc.bad)
		}
	}
}
