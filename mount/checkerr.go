package mount

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// checkTimeout bounds each mount-time check (HeadBucket, DescribeKey), with
// its retries: an endpoint that accepts connections and never answers, or
// drops them, fails the mount within it, not after the retry deadline of
// normal operations (--s3-retry-deadline, --kms-deadline).
const checkTimeout = 10 * time.Second

// endpointOf names the endpoint a client of service ("S3", "KMS") talks
// to, for messages: the flag, else the SDK's environment variables and
// configuration, else the AWS regional endpoint.
func endpointOf(service, explicit string, c *aws.Config, region string) string {
	if explicit != "" {
		return explicit
	}
	if v := os.Getenv("AWS_ENDPOINT_URL_" + service); v != "" {
		return v
	}
	if v := os.Getenv("AWS_ENDPOINT_URL"); v != "" {
		return v
	}
	if c != nil && c.BaseEndpoint != nil && *c.BaseEndpoint != "" {
		return *c.BaseEndpoint
	}
	if region == "" && c != nil {
		region = c.Region
	}
	if service == "S3" {
		return "https://s3." + region + ".amazonaws.com"
	}
	return "https://kms." + region + ".amazonaws.com"
}

// unreachable describes a check that got no answer from endpoint, or ""
// if err is not that. The SDK retries refused and timed-out connections
// alike until the deadline, so a TCP connect (2 s at most) tells them
// apart: nothing listening, no connection at all, or a connection that
// never got a response.
func unreachable(service, endpoint string, err error) string {
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() != 0 {
		return "" // it answered
	}
	host := endpoint
	if u, perr := url.Parse(endpoint); perr == nil && u.Host != "" {
		host = u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80"}[u.Scheme]+map[string]string{"https": "443", "": "443"}[u.Scheme])
		}
	}
	c, derr := net.DialTimeout("tcp", host, 2*time.Second)
	switch {
	case derr == nil:
		c.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Sprintf("%s endpoint %s accepted the connection but did not answer within %s", service, endpoint, checkTimeout)
		}
		return fmt.Sprintf("%s endpoint %s is unreachable: %v", service, endpoint, rootCause(err))
	case errors.Is(derr, syscall.ECONNREFUSED):
		return fmt.Sprintf("%s endpoint %s is unreachable: connection refused", service, endpoint)
	}
	return fmt.Sprintf("%s endpoint %s is unreachable: %v", service, endpoint, rootCause(derr))
}

// rootCause is the innermost error of err's chain.
func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// notS3 returns the HTTP status of err if it is an error response that
// no S3 (AWS, MinIO, Ceph, …) or KMS would send: one without a request id.
// Such a 404 is a web server, a proxy or a wrong URL, not a missing
// bucket. 0: err is not that.
func notS3(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() != 0 && re.ServiceRequestID() == "" {
		return re.HTTPStatusCode()
	}
	return 0
}
