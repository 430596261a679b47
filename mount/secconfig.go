package mount

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// S3Encryption is EncryptionConfiguration.AtRestEncryptionConfiguration.
// S3EncryptionConfiguration of an EMR security configuration, or one of its
// Overrides.
type S3Encryption struct {
	EncryptionMode             string         // "CSE-KMS", "CSE-Custom", "SSE-S3", "SSE-KMS"
	AwsKmsKey                  string         `json:",omitempty"`
	S3Object                   string         `json:",omitempty"` // CSE-Custom: the provider jar
	EncryptionKeyProviderClass string         `json:",omitempty"` // CSE-Custom
	EncryptionKeyProviderType  string         `json:",omitempty"`
	BucketName                 string         `json:",omitempty"` // Overrides only
	Overrides                  []S3Encryption `json:",omitempty"`
}

// SecurityConfiguration is the part of an EMR security configuration csefs
// reads; everything else (Kerberos, local-disk encryption, a Custom
// certificate provider) is ignored.
type SecurityConfiguration struct {
	EncryptionConfiguration struct {
		EnableInTransitEncryption        *bool
		InTransitEncryptionConfiguration struct {
			TLSCertificateConfiguration struct {
				CertificateProviderType string // "PEM" or "Custom"
				S3Object                string // PEM: the zip of PEM artifacts
			}
		}
		EnableAtRestEncryption        *bool
		AtRestEncryptionConfiguration struct {
			S3EncryptionConfiguration *S3Encryption
		}
	}
}

// ParseSecurityConfiguration parses an EMR security configuration (the JSON
// of aws emr create-security-configuration --security-configuration). It
// requires EncryptionConfiguration.AtRestEncryptionConfiguration.
// S3EncryptionConfiguration with an EncryptionMode. Errors wrap
// ErrConfigFile.
func ParseSecurityConfiguration(data []byte) (*SecurityConfiguration, error) {
	var sc SecurityConfiguration
	if err := json.Unmarshal(data, &sc); err != nil {
		return nil, fmt.Errorf("malformed JSON: %v: %w", err, ErrConfigFile)
	}
	s3 := sc.EncryptionConfiguration.AtRestEncryptionConfiguration.S3EncryptionConfiguration
	if s3 == nil {
		return nil, fmt.Errorf("no EncryptionConfiguration.AtRestEncryptionConfiguration.S3EncryptionConfiguration: %w", ErrConfigFile)
	}
	if s3.EncryptionMode == "" {
		return nil, fmt.Errorf("S3EncryptionConfiguration has no EncryptionMode: %w", ErrConfigFile)
	}
	for i, o := range s3.Overrides {
		if o.BucketName == "" || o.EncryptionMode == "" {
			return nil, fmt.Errorf("S3EncryptionConfiguration.Overrides[%d] needs BucketName and EncryptionMode: %w", i, ErrConfigFile)
		}
	}
	return &sc, nil
}

// For returns the S3 encryption settings that apply to bucket: an override
// naming it, else the default.
func (sc *SecurityConfiguration) For(bucket string) S3Encryption {
	s3 := sc.EncryptionConfiguration.AtRestEncryptionConfiguration.S3EncryptionConfiguration
	for _, o := range s3.Overrides {
		if o.BucketName == bucket {
			return o
		}
	}
	return *s3
}

// applySecurityConfiguration maps the settings for bucket onto cfg, leaving
// explicitly set flags alone:
//
//	CSE-KMS     → --cse kms --kms-key-id AwsKmsKey --kms-wrap kms (EMRFS's legacy wrap)
//	CSE-Custom  → --cse custom; the Java provider class cannot run here, so
//	              --keyring or --materials-provider must supply the keys
//	SSE-S3      → --sse s3 --cse off
//	SSE-KMS     → --sse kms --sse-kms-key-id AwsKmsKey --cse off
//
// (An explicit --cse with an SSE mode keeps both: defence in depth.)
// At-rest encryption switched off (EnableAtRestEncryption false) → --cse off.
// In-transit encryption with CertificateProviderType PEM and an S3Object
// → --tls-artifacts S3Object (a Custom provider is a Java class: give
// --tls-artifacts).
func applySecurityConfiguration(cfg *Config, sc *SecurityConfiguration, bucket string, set flagSet) error {
	ec := &sc.EncryptionConfiguration
	if tc := ec.InTransitEncryptionConfiguration.TLSCertificateConfiguration; ec.EnableInTransitEncryption != nil && *ec.EnableInTransitEncryption &&
		strings.EqualFold(tc.CertificateProviderType, "PEM") && tc.S3Object != "" && !set.has("tls-artifacts") {
		cfg.TLSArtifacts = tc.S3Object
	}
	if e := sc.EncryptionConfiguration.EnableAtRestEncryption; e != nil && !*e {
		if !set.has("cse") {
			cfg.CSE = "off"
		}
		return nil
	}
	s := sc.For(bucket)
	mode := strings.ToUpper(s.EncryptionMode)
	if mode == "SSE-S3" || mode == "SSE-KMS" {
		if !set.has("sse") && !set.has("sse-c-key-file") {
			cfg.SSE = "s3"
			if mode == "SSE-KMS" {
				cfg.SSE = "kms"
				if !set.has("sse-kms-key-id") {
					cfg.SSEKMSKeyID = s.AwsKmsKey
				}
			}
		}
		if !set.has("cse") {
			cfg.CSE = "off"
		}
		return nil
	}
	if set.has("cse") {
		return nil
	}
	switch mode {
	case "CSE-KMS":
		if s.AwsKmsKey == "" && cfg.KMSKeyID == "" {
			return fmt.Errorf("EncryptionMode CSE-KMS without AwsKmsKey: %w", ErrConfigFile)
		}
		cfg.CSE = "kms"
		if s.AwsKmsKey != "" && !set.has("kms-key-id") {
			cfg.KMSKeyID = s.AwsKmsKey
		}
		if !set.has("kms-wrap") {
			cfg.KMSWrap = "kms"
		}
	case "CSE-CUSTOM":
		if cfg.Keyring == "" && cfg.MaterialsProvider == "" {
			class := s.EncryptionKeyProviderClass
			if class == "" {
				class = "(unnamed)"
			}
			return fmt.Errorf("EncryptionMode CSE-Custom: the Java provider %s (%s) cannot run in csefs; give --keyring FILE or --materials-provider exec:PROGRAM that provides the same keys: %w", class, s.S3Object, ErrConfigFile)
		}
		cfg.CSE = "custom"
	default:
		return fmt.Errorf("EncryptionMode %q: expected CSE-KMS, CSE-Custom, SSE-S3 or SSE-KMS: %w", s.EncryptionMode, ErrConfigFile)
	}
	return nil
}

// loadSecurityConfiguration reads and applies the file at path.
func loadSecurityConfiguration(cfg *Config, path, bucket string, set flagSet) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--security-configuration %s: %w: %w", path, ErrConfigFile, err)
	}
	sc, err := ParseSecurityConfiguration(data)
	if err == nil {
		err = applySecurityConfiguration(cfg, sc, bucket, set)
	}
	if err != nil {
		return fmt.Errorf("--security-configuration %s: %w", path, err)
	}
	return nil
}
