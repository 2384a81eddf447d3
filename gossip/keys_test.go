package gossip

import (
	"encoding/base64"
	"encoding/hex"
)

// keyEncodings are the forms a key could leak into a log in.
func keyEncodings(k []byte) []string {
	return []string{
		string(k),
		hex.EncodeToString(k),
		base64.StdEncoding.EncodeToString(k),
		base64.RawStdEncoding.EncodeToString(k),
		base64.URLEncoding.EncodeToString(k),
	}
}
