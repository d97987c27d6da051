package harness

import (
	"bytes"
	"fmt"
	"os"

	"github.com/BurntSushi/toml"
)

// writeTOML writes base merged with the TOML document extra (extra wins; tables merge
// key by key) to path.
func writeTOML(path string, base map[string]any, extra string) error {
	if extra != "" {
		var over map[string]any
		if _, err := toml.Decode(extra, &over); err != nil {
			return fmt.Errorf("parse extra TOML for %s: %w\n%s", path, err, extra)
		}
		mergeTOML(base, over)
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(base); err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// mergeTOML merges over into dst: tables are merged recursively, other values replaced.
func mergeTOML(dst, over map[string]any) {
	for k, v := range over {
		if vm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeTOML(dm, vm)
				continue
			}
		}
		dst[k] = v
	}
}

// table is shorthand for a TOML table literal.
type table = map[string]any
