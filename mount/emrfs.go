package mount

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// ErrConfigFile: a configuration file (--emrfs-site, --security-configuration,
// --zones-file, a keyring) is malformed or asks for something csefs cannot
// do. The message names the file and the problem.
var ErrConfigFile = errors.New("bad configuration file")

// EMRFS class and property names (EMRFS-DEC, s3ec-format.md §5).
const (
	EMRFSKMSProviderClass = "com.amazon.ws.emr.hadoop.fs.cse.KMSEncryptionMaterialsProvider"

	propCSEEnabled     = "fs.s3.cse.enabled"
	propProvider       = "fs.s3.cse.encryptionMaterialsProvider"
	propKMSKeyID       = "fs.s3.cse.kms.keyId"
	propKMSRegion      = "fs.s3.cse.kms.region"
	propStorageMode    = "fs.s3.cse.cryptoStorageMode"
	propMatDescEnabled = "fs.s3.cse.materialsDescription.enabled"
	propCryptoMode     = "fs.s3.cse.cryptoMode"
	propEncryptionV2   = "fs.s3.cse.encryptionV2.enabled"
	propSSEEnabled     = "fs.s3.enableServerSideEncryption"
	propSSEKMSKeyID    = "fs.s3.serverSideEncryption.kms.keyId"
)

// ignoredEMRFSProps are EMRFS CSE properties csefs understands and has no use
// for (logged at debug level with the unknown ones, but not as unknown).
var ignoredEMRFSProps = map[string]string{
	"fs.s3.cse.encryptionMaterialsProvider.uri":                  "the provider's jar; Java classes cannot run in csefs",
	"fs.s3.cse.plaintextLength.enabled":                          "csefs never stores x-amz-unencrypted-content-length (streamed writes do not know it up front); readers derive GCM sizes from the stored size",
	"fs.s3.cse.cryptoStorageMode.deleteInstructionFiles.enabled": "csefs always deletes instruction files with their objects",
}

// EMRFSSite is a parsed emrfs-site.xml (Hadoop configuration XML): the
// properties in file order, a later duplicate replacing an earlier one.
type EMRFSSite struct {
	Props map[string]string
	Names []string // first-appearance order
}

type hadoopConfiguration struct {
	XMLName    xml.Name `xml:"configuration"`
	Properties []struct {
		Name  *string `xml:"name"`
		Value *string `xml:"value"`
	} `xml:"property"`
}

// ParseEMRFSSite parses Hadoop configuration XML:
//
//	<configuration>
//	  <property><name>fs.s3.cse.enabled</name><value>true</value></property>
//	  …
//	</configuration>
//
// Names and values are trimmed of surrounding white space, as Hadoop does.
// Other elements of a property (description, final, source) are ignored. A
// root other than <configuration>, a property without a name or value, or
// XML that does not parse is an error wrapping ErrConfigFile.
func ParseEMRFSSite(data []byte) (*EMRFSSite, error) {
	var c hadoopConfiguration
	dec := xml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("no <configuration> element: %w", ErrConfigFile)
		}
		return nil, fmt.Errorf("malformed XML: %v: %w", err, ErrConfigFile)
	}
	// Anything after the root element must be white space or comments.
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("malformed XML after </configuration>: %v: %w", err, ErrConfigFile)
		}
		switch t := tok.(type) {
		case xml.Comment, xml.ProcInst:
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return nil, fmt.Errorf("text after </configuration>: %w", ErrConfigFile)
			}
		default:
			return nil, fmt.Errorf("content after </configuration>: %w", ErrConfigFile)
		}
	}
	s := &EMRFSSite{Props: map[string]string{}}
	for i, p := range c.Properties {
		if p.Name == nil || strings.TrimSpace(*p.Name) == "" {
			return nil, fmt.Errorf("property %d has no <name>: %w", i+1, ErrConfigFile)
		}
		name := strings.TrimSpace(*p.Name)
		if p.Value == nil {
			return nil, fmt.Errorf("property %s has no <value>: %w", name, ErrConfigFile)
		}
		if _, ok := s.Props[name]; !ok {
			s.Names = append(s.Names, name)
		}
		s.Props[name] = strings.TrimSpace(*p.Value)
	}
	return s, nil
}

// flagSet tells which command-line flags were given explicitly; those win
// over configuration files.
type flagSet func(name string) bool

func (f flagSet) has(name string) bool { return f != nil && f(name) }

// applyEMRFSSite maps an emrfs-site.xml onto cfg, leaving explicitly set
// flags alone (see the table in Apply's caller, applyConfigFiles):
//
//	fs.s3.cse.enabled=false                 → --cse off
//	fs.s3.cse.encryptionMaterialsProvider   KMS class → --cse kms (and --kms-wrap kms,
//	                                        EMRFS's legacy wrap, unless encryptionV2.enabled)
//	                                        other class → --cse custom, which needs
//	                                        --keyring or --materials-provider
//	fs.s3.cse.kms.keyId                     → --kms-key-id
//	fs.s3.cse.kms.region                    → the KMS client's region
//	fs.s3.cse.cryptoStorageMode             ObjectMetadata|InstructionFile → --storage-mode
//	fs.s3.cse.materialsDescription.enabled  → --materials-description
//	fs.s3.cse.cryptoMode                    EncryptionOnly (logged: csefs writes GCM),
//	                                        AuthenticatedEncryption, or
//	                                        StrictAuthenticatedEncryption → --strict-ranged-reads
//	fs.s3.enableServerSideEncryption=true   → --sse s3, or --sse kms with
//	                                        fs.s3.serverSideEncryption.kms.keyId
//	                                        (→ --sse-kms-key-id); and --cse off
//	                                        unless fs.s3.cse.enabled is true (EMRFS
//	                                        does one or the other; csefs can do both)
//
// Errors wrap ErrConfigFile; the caller prefixes the file name.
func applyEMRFSSite(cfg *Config, s *EMRFSSite, set flagSet, log *slog.Logger) error {
	p := s.Props
	boolProp := func(name string) (v, ok bool, err error) {
		raw, ok := p[name]
		if !ok {
			return false, false, nil
		}
		switch strings.ToLower(raw) {
		case "true":
			return true, true, nil
		case "false":
			return false, true, nil
		}
		return false, false, fmt.Errorf("%s = %q: expected true or false: %w", name, raw, ErrConfigFile)
	}
	enabled, haveEnabled, err := boolProp(propCSEEnabled)
	if err != nil {
		return err
	}
	v2, _, err := boolProp(propEncryptionV2)
	if err != nil {
		return err
	}
	sse, haveSSE, err := boolProp(propSSEEnabled)
	if err != nil {
		return err
	}
	if haveSSE && sse {
		if !set.has("sse") && !set.has("sse-c-key-file") {
			cfg.SSE = "s3"
			if k := p[propSSEKMSKeyID]; k != "" {
				cfg.SSE = "kms"
				if !set.has("sse-kms-key-id") {
					cfg.SSEKMSKeyID = k
				}
			}
		}
		if !(haveEnabled && enabled) && !set.has("cse") {
			cfg.CSE = "off"
		}
	}
	class, haveClass := p[propProvider]
	switch {
	case set.has("cse"):
	case haveEnabled && !enabled:
		cfg.CSE = "off"
	case haveClass && class == EMRFSKMSProviderClass:
		cfg.CSE = "kms"
		if !set.has("kms-wrap") && !v2 {
			// EMRFS CSE-KMS (SDK v1 client) writes the legacy kms wrap.
			cfg.KMSWrap = "kms"
		}
	case haveClass:
		if cfg.Keyring == "" && cfg.MaterialsProvider == "" {
			return fmt.Errorf("%s = %s: a Java materials provider cannot run in csefs; give --keyring FILE or --materials-provider exec:PROGRAM that provides the same keys: %w", propProvider, class, ErrConfigFile)
		}
		cfg.CSE = "custom"
	case haveEnabled && enabled:
		return fmt.Errorf("%s is true but %s is not set: %w", propCSEEnabled, propProvider, ErrConfigFile)
	}
	if v, ok := p[propKMSKeyID]; ok && !set.has("kms-key-id") {
		cfg.KMSKeyID = v
	}
	if v, ok := p[propKMSRegion]; ok && !set.has("kms-region") {
		cfg.KMSRegion = v
	}
	if v, ok := p[propStorageMode]; ok && !set.has("storage-mode") {
		switch v {
		case "ObjectMetadata":
			cfg.StorageMode = "object-metadata"
		case "InstructionFile":
			cfg.StorageMode = "instruction-file"
		default:
			return fmt.Errorf("%s = %q: expected ObjectMetadata or InstructionFile: %w", propStorageMode, v, ErrConfigFile)
		}
	}
	if v, ok, err := boolProp(propMatDescEnabled); err != nil {
		return err
	} else if ok && !set.has("materials-description") {
		cfg.MaterialsDescription = v
	}
	if v, ok := p[propCryptoMode]; ok {
		switch v {
		case "EncryptionOnly":
			log.Info("emrfs-site: fs.s3.cse.cryptoMode is EncryptionOnly (AES/CBC); csefs writes AES/GCM only, so new objects are AuthenticatedEncryption-compatible (EMRFS reads them in either mode); CBC objects are still read")
		case "AuthenticatedEncryption":
		case "StrictAuthenticatedEncryption":
			if !set.has("strict-ranged-reads") {
				cfg.StrictRanged = true
			}
		default:
			return fmt.Errorf("%s = %q: expected EncryptionOnly, AuthenticatedEncryption or StrictAuthenticatedEncryption: %w", propCryptoMode, v, ErrConfigFile)
		}
	}
	for _, name := range s.Names {
		switch name {
		case propCSEEnabled, propProvider, propKMSKeyID, propKMSRegion, propStorageMode,
			propMatDescEnabled, propCryptoMode, propEncryptionV2, propSSEEnabled, propSSEKMSKeyID:
			continue
		}
		if why, ok := ignoredEMRFSProps[name]; ok {
			log.Debug("emrfs-site: property ignored", "property", name, "why", why)
			continue
		}
		log.Debug("emrfs-site: unknown property ignored", "property", name)
	}
	return nil
}

// loadEMRFSSite reads and applies the file at path.
func loadEMRFSSite(cfg *Config, path string, set flagSet, log *slog.Logger) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--emrfs-site %s: %w: %w", path, ErrConfigFile, err)
	}
	s, err := ParseEMRFSSite(data)
	if err == nil {
		err = applyEMRFSSite(cfg, s, set, log)
	}
	if err != nil {
		return fmt.Errorf("--emrfs-site %s: %w", path, err)
	}
	return nil
}
