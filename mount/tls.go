package mount

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// ErrTLS: the TLS settings cannot be used (a missing or malformed PEM
// file, a key that does not match its certificate, an expired client
// certificate) or an endpoint's certificate is refused. The message names
// the file or the endpoint.
var ErrTLS = errors.New("unusable TLS input")

// The file names of EMR's PEM in-transit encryption artifacts.
const (
	artifactKey     = "privateKey.pem"
	artifactChain   = "certificateChain.pem"
	artifactTrusted = "trustedCertificates.pem"
)

// tlsArtifacts are EMR's PEM artifacts, read from a zip, a directory or an
// s3:// zip.
type tlsArtifacts struct {
	key, chain, trusted []byte // trusted may be nil (optional)
}

// readArtifacts reads the artifacts at loc: a directory, a .zip file, or
// s3://BUCKET/KEY.zip fetched with get. privateKey.pem and
// certificateChain.pem are required, trustedCertificates.pem is optional
// (as EMR has them). Zip entries are matched by base name.
func readArtifacts(ctx context.Context, loc string, get func(ctx context.Context, bucket, key string) ([]byte, error)) (*tlsArtifacts, error) {
	files := map[string][]byte{}
	switch {
	case strings.HasPrefix(loc, "s3://"):
		u, err := url.Parse(loc)
		if err != nil || u.Host == "" || strings.Trim(u.Path, "/") == "" {
			return nil, fmt.Errorf("--tls-artifacts %s: expected s3://BUCKET/KEY.zip: %w", loc, ErrTLS)
		}
		data, err := get(ctx, u.Host, strings.TrimPrefix(u.Path, "/"))
		if err != nil {
			return nil, fmt.Errorf("--tls-artifacts %s: %w: %w", loc, ErrTLS, err)
		}
		if err := unzipArtifacts(data, files); err != nil {
			return nil, fmt.Errorf("--tls-artifacts %s: %w", loc, err)
		}
	default:
		fi, err := os.Stat(loc)
		if err != nil {
			return nil, fmt.Errorf("--tls-artifacts: %w: %w", ErrTLS, err)
		}
		if fi.IsDir() {
			for _, n := range []string{artifactKey, artifactChain, artifactTrusted} {
				b, err := os.ReadFile(filepath.Join(loc, n))
				if errors.Is(err, os.ErrNotExist) {
					continue
				}
				if err != nil {
					return nil, fmt.Errorf("--tls-artifacts: %w: %w", ErrTLS, err)
				}
				files[n] = b
			}
		} else {
			data, err := os.ReadFile(loc)
			if err != nil {
				return nil, fmt.Errorf("--tls-artifacts: %w: %w", ErrTLS, err)
			}
			if err := unzipArtifacts(data, files); err != nil {
				return nil, fmt.Errorf("--tls-artifacts %s: %w", loc, err)
			}
		}
	}
	a := &tlsArtifacts{key: files[artifactKey], chain: files[artifactChain], trusted: files[artifactTrusted]}
	for n, b := range map[string][]byte{artifactKey: a.key, artifactChain: a.chain} {
		if b == nil {
			return nil, fmt.Errorf("--tls-artifacts %s: no %s (EMR's PEM artifacts are %s, %s and, optionally, %s): %w",
				loc, n, artifactKey, artifactChain, artifactTrusted, ErrTLS)
		}
	}
	return a, nil
}

// unzipArtifacts reads the artifact files of a zip into files.
func unzipArtifacts(data []byte, files map[string][]byte) error {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return fmt.Errorf("not a zip file: %v: %w", err, ErrTLS)
	}
	for _, f := range zr.File {
		n := path.Base(f.Name)
		if n != artifactKey && n != artifactChain && n != artifactTrusted {
			continue
		}
		if _, dup := files[n]; dup {
			return fmt.Errorf("%s appears twice in the zip: %w", n, ErrTLS)
		}
		rc, err := f.Open()
		if err != nil {
			return fmt.Errorf("%s: %v: %w", f.Name, err, ErrTLS)
		}
		b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: %v: %w", f.Name, err, ErrTLS)
		}
		files[n] = b
	}
	return nil
}

// parseCertsPEM returns the certificates of a PEM file; none, or a block
// that does not parse, is an error naming name.
func parseCertsPEM(name string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %v: %w", name, len(certs)+1, err, ErrTLS)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate in it: %w", name, ErrTLS)
	}
	return certs, nil
}

// clientCertificate checks and pairs the artifacts' chain and key.
func (a *tlsArtifacts) clientCertificate(loc string, now time.Time) (tls.Certificate, error) {
	chainName := loc + ": " + artifactChain
	if _, err := parseCertsPEM(chainName, a.chain); err != nil {
		return tls.Certificate{}, err
	}
	if b, _ := pem.Decode(a.key); b == nil || !strings.Contains(b.Type, "PRIVATE KEY") {
		return tls.Certificate{}, fmt.Errorf("%s: %s: no PEM private key in it: %w", loc, artifactKey, ErrTLS)
	}
	cert, err := tls.X509KeyPair(a.chain, a.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %s does not match %s, or does not parse: %v: %w", loc, artifactKey, artifactChain, err, ErrTLS)
	}
	leaf := cert.Leaf
	if leaf == nil {
		leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	if now.After(leaf.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("%s: the certificate in %s (%s) expired on %s: %w", loc, artifactChain, leaf.Subject, leaf.NotAfter.UTC().Format(time.RFC3339), ErrTLS)
	}
	if now.Before(leaf.NotBefore) {
		return tls.Certificate{}, fmt.Errorf("%s: the certificate in %s (%s) is not valid before %s: %w", loc, artifactChain, leaf.Subject, leaf.NotBefore.UTC().Format(time.RFC3339), ErrTLS)
	}
	return cert, nil
}

// tlsConfig is the client TLS configuration of cfg for S3 and KMS: TLS 1.2
// at least; the system roots, plus --ca-bundle, plus the artifacts'
// trustedCertificates.pem; the artifacts' certificate as the client
// certificate (mutual TLS). get fetches an s3:// artifacts zip (with the
// roots known so far). AWS_CA_BUNDLE is added by the SDK, later.
func tlsConfig(ctx context.Context, cfg Config, get func(ctx context.Context, tc *tls.Config, bucket, key string) ([]byte, error)) (*tls.Config, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	if cfg.CABundle != "" {
		data, err := os.ReadFile(cfg.CABundle)
		if err != nil {
			return nil, fmt.Errorf("--ca-bundle: %w: %w", ErrTLS, err)
		}
		certs, err := parseCertsPEM("--ca-bundle "+cfg.CABundle, data)
		if err != nil {
			return nil, err
		}
		for _, c := range certs {
			roots.AddCert(c)
		}
	}
	if cfg.TLSArtifacts == "" {
		return tc, nil
	}
	a, err := readArtifacts(ctx, cfg.TLSArtifacts, func(ctx context.Context, bucket, key string) ([]byte, error) {
		return get(ctx, tc.Clone(), bucket, key)
	})
	if err != nil {
		return nil, err
	}
	defer clear(a.key)
	if a.trusted != nil {
		certs, err := parseCertsPEM(cfg.TLSArtifacts+": "+artifactTrusted, a.trusted)
		if err != nil {
			return nil, err
		}
		for _, c := range certs {
			roots.AddCert(c)
		}
	}
	cert, err := a.clientCertificate(cfg.TLSArtifacts, time.Now())
	if err != nil {
		return nil, err
	}
	// Always present it, whatever CAs the server says it accepts: a
	// gateway's list may not name the issuer.
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return tc, nil
}

// httpClient is the SDK HTTP client with tc.
func httpClient(tc *tls.Config) *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.TLSClientConfig = tc
	})
}

// fetchObject reads s3://bucket/key with a client of cfg's endpoint over tc
// (for an s3:// artifacts zip).
func fetchObject(ctx context.Context, base aws.Config, cfg Config, tc *tls.Config, bucket, key string) ([]byte, error) {
	base.HTTPClient = httpClient(tc)
	c := s3.NewFromConfig(base, func(o *s3.Options) {
		if cfg.EndpointURL != "" {
			o.BaseEndpoint = aws.String(cfg.EndpointURL)
		}
		o.UsePathStyle = cfg.PathStyle
	})
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(io.LimitReader(out.Body, 16<<20))
}

// endpoints are the explicit endpoints of cfg and the environment, by
// service.
func endpoints(cfg Config) map[string]string {
	m := map[string]string{}
	pick := func(service, flag string, envs ...string) {
		if flag != "" {
			m[service] = flag
			return
		}
		for _, e := range envs {
			if v := os.Getenv(e); v != "" {
				m[service] = v
				return
			}
		}
	}
	pick("S3", cfg.EndpointURL, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
	pick("KMS", cfg.KMSEndpointURL, "AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL")
	return m
}

// checkEndpoints refuses a plain http:// endpoint on a host that is not
// loopback unless --allow-http: request signatures, session tokens, data
// keys from KMS and (with --cse off) the data itself would cross the
// network in the clear. SSE-C over http is refused everywhere (S3 refuses
// it too, but only at the first write).
func checkEndpoints(cfg Config) error {
	eps := endpoints(cfg)
	for _, service := range []string{"S3", "KMS"} { // a stable order for the message
		ep, ok := eps[service]
		if !ok {
			continue
		}
		u, err := url.Parse(ep)
		if err != nil {
			return fmt.Errorf("%s endpoint %q: %w", service, ep, err)
		}
		if u.Scheme == "http" && service == "S3" && (cfg.SSE == "c" || cfg.SSECKeyFile != "") {
			return fmt.Errorf("S3 endpoint %s is plain http: SSE-C sends its key with every request, and S3 accepts it only over https", ep)
		}
		if u.Scheme != "http" || cfg.AllowHTTP || isLoopback(u.Hostname()) {
			continue
		}
		return fmt.Errorf("%s endpoint %s is plain http to a host that is not loopback: credentials and data would travel in the clear; use https, or --allow-http", service, ep)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// probeEndpoints makes one request to each explicit https endpoint whose
// service the mount uses, so that an untrusted or expired server
// certificate, or a client certificate the server refuses, stops the mount
// at once with the endpoint named (instead of retries until
// --s3-retry-deadline). Any HTTP answer passes.
func probeEndpoints(ctx context.Context, sdk aws.HTTPClient, cfg Config, services ...string) error {
	bc, ok := sdk.(*awshttp.BuildableClient)
	if !ok {
		return nil
	}
	// HTTP/1.1 only: over HTTP/2 a refused handshake is reported as
	// "http2: client conn could not be established", without its reason.
	tr := bc.GetTransport()
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	if tr.TLSClientConfig != nil {
		tr.TLSClientConfig = tr.TLSClientConfig.Clone()
		tr.TLSClientConfig.NextProtos = nil
	}
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	eps := endpoints(cfg)
	for _, service := range services {
		ep, ok := eps[service]
		if !ok || !strings.HasPrefix(ep, "https://") {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		req, err := http.NewRequestWithContext(pctx, http.MethodGet, ep, nil)
		if err != nil {
			cancel()
			return fmt.Errorf("%s endpoint %s: %w", service, ep, err)
		}
		resp, err := hc.Do(req)
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		cancel()
		if err != nil {
			return fmt.Errorf("%s endpoint %s: %w", service, ep, err)
		}
	}
	return nil
}
