package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// CA is a certificate authority made for one test run (crypto/x509, ECDSA
// P-256), to serve MinIO and the proxies over TLS and to issue client
// certificates.
type CA struct {
	Cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	CertPEM []byte
	// File is CertPEM written to a file (a --ca-bundle).
	File string
}

// NewCA makes a CA named name and writes its certificate to dir/name.pem.
func NewCA(dir, name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"csefs tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{Cert: cert, key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.File = filepath.Join(dir, name+".pem")
	if err := os.WriteFile(ca.File, ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// Pool is a cert pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// CertOptions shape an issued certificate.
type CertOptions struct {
	Client   bool      // a client certificate (else a server one for 127.0.0.1, ::1 and localhost)
	NotAfter time.Time // zero: a day from now; in the past: an expired certificate
}

// Issue returns a new certificate (PEM, with the CA's certificate after it:
// a chain) and its private key (PKCS#8 PEM).
func (ca *CA) Issue(cn string, o CertOptions) (chainPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if o.Client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	chainPEM = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.CertPEM...)
	return chainPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// TLSConfig is a server TLS configuration with a fresh certificate from ca.
func (ca *CA) serverTLS(o CertOptions) (*tls.Config, error) {
	chain, key, err := ca.Issue("csefs-test-server", o)
	if err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}, nil
}

// HTTPClient is an http.Client that trusts only ca.
func (ca *CA) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 16,
	}}
}

var (
	secureOnce sync.Once
	secureSrv  *S3Server
	secureErr  error
)

// MinIOKMSKey is the name of the key of SecureMinIO's built-in KMS: the key
// id for SSE-KMS.
const MinIOKMSKey = "csefs-minio-key"

// SecureMinIO returns the package-wide MinIO that serves https (a
// certificate for 127.0.0.1 from S3Server.CA, in its --certs-dir) and has a
// KMS secret key (MINIO_KMS_SECRET_KEY, key MinIOKMSKey), so that it serves
// SSE-S3, SSE-KMS and SSE-C. Its Client trusts the CA.
func SecureMinIO(t testing.TB) *S3Server {
	t.Helper()
	secureOnce.Do(func() {
		var dir string
		dir, secureErr = os.MkdirTemp("", "csefs-ca-")
		if secureErr != nil {
			return
		}
		var ca *CA
		if ca, secureErr = NewCA(dir, "csefs-test-ca"); secureErr != nil {
			return
		}
		secureSrv, _, secureErr = startMinIO(minioOptions{ca: ca, kms: true})
	})
	if secureErr != nil {
		Unavailable(t, "MinIO with TLS and KMS: %v", secureErr)
	}
	return secureSrv
}

// TLSProxy is a reverse proxy serving https on 127.0.0.1 with a certificate
// from a CA, optionally requiring a client certificate (mutual TLS), in
// front of an http:// or https:// target.
type TLSProxy struct {
	URL string // https://127.0.0.1:PORT
	srv *http.Server
	ln  net.Listener
}

// TLSProxyOptions shape a TLSProxy.
type TLSProxyOptions struct {
	CA *CA // issues the proxy's server certificate
	// ClientCA, if set, makes the proxy refuse any client without a
	// certificate it issued (tls.RequireAndVerifyClientCert).
	ClientCA *CA
	// TargetCA is the CA the target's certificate is checked against (an
	// https target).
	TargetCA *CA
	// Cert shapes the server certificate (NotAfter in the past: expired).
	Cert CertOptions
}

// NewTLSProxy starts a TLSProxy to target, closed when t ends.
func NewTLSProxy(t testing.TB, target string, o TLSProxyOptions) *TLSProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := o.CA.serverTLS(o.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if o.ClientCA != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = o.ClientCA.Pool()
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	if o.TargetCA != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: o.TargetCA.Pool(), MinVersion: tls.VersionTLS12}
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host // the client signed its own Host
		},
		Transport: tr,
		ErrorLog:  quiet,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &TLSProxy{URL: "https://" + ln.Addr().String(), ln: ln,
		srv: &http.Server{Handler: rp, TLSConfig: cfg, ErrorLog: quiet}}
	go p.srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { p.srv.Close() })
	return p
}

// Via returns s as reached through p (see S3Server.Via); the client trusts
// ca (p's) and presents no client certificate.
func (s *S3Server) ViaTLS(p *TLSProxy, ca *CA) *S3Server {
	c := *s
	c.Endpoint = p.URL
	c.CA = ca
	return &c
}

// quiet drops the proxies' own logs (refused handshakes are the point).
var quiet = log.New(io.Discard, "", 0)

func (ca *CA) String() string { return fmt.Sprintf("CA %s", ca.Cert.Subject.CommonName) }
