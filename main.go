package main

import (
	_ "github.com/aws/aws-sdk-go-v2/config"
	_ "github.com/aws/aws-sdk-go-v2/service/kms"
	_ "github.com/aws/aws-sdk-go-v2/service/s3"
	_ "github.com/hanwen/go-fuse/v2/fs"
	_ "github.com/hashicorp/golang-lru/v2"
	_ "github.com/urfave/cli/v2"
)

func main() {}
