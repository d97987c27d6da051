package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// fill writes the deterministic pseudo-random sequence of seed into buf: splitmix64
// outputs in little-endian order, the last one truncated when len(buf) is not a
// multiple of 8. The same seed always gives the same bytes.
func fill(buf []byte, seed uint64) {
	state := seed
	i := 0
	for ; i+8 <= len(buf); i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], splitmix64(&state))
	}
	if i < len(buf) {
		var last [8]byte
		binary.LittleEndian.PutUint64(last[:], splitmix64(&state))
		copy(buf[i:], last[:])
	}
}

// splitmix64 advances state and returns the next output (Steele, Lea, Flood 2014).
func splitmix64(state *uint64) uint64 {
	*state += 0x9e3779b97f4a7c15
	z := *state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// digest returns the hex SHA-256 of buf.
func digest(buf []byte) string {
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:])
}

// fileName and fileContent define the files written by the files subcommand.
func fileName(i int) string { return fmt.Sprintf("file-%04d", i) }

func fileContent(i int) []byte {
	b := make([]byte, 4096+i)
	fill(b, uint64(i)+1)
	return b
}
