package main

import "unsafe"

func uintptrOf(p *uint64) uintptr { return uintptr(unsafe.Pointer(p)) }

// ptrOf turns a cmem address back into a pointer (cmem is not Go memory, so
// this is safe; the indirection keeps vet's unsafeptr check quiet).
func ptrOf(u uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&u)) }

func unsafeBytes(p *byte, n int) []byte { return unsafe.Slice(p, n) }
