package driver

import (
	"errors"
	"fmt"
)

// Result is a CUDA driver API status code (CUresult in cuda.h).
type Result int32

// CUresult values this package refers to by name (cuda.h, CUDA 12.8 and 13.x).
const (
	Success              Result = 0   // CUDA_SUCCESS
	ErrorInvalidValue    Result = 1   // CUDA_ERROR_INVALID_VALUE
	ErrorOutOfMemory     Result = 2   // CUDA_ERROR_OUT_OF_MEMORY
	ErrorNotInitialized  Result = 3   // CUDA_ERROR_NOT_INITIALIZED
	ErrorDeinitialized   Result = 4   // CUDA_ERROR_DEINITIALIZED
	ErrorNoDevice        Result = 100 // CUDA_ERROR_NO_DEVICE
	ErrorNotPermitted    Result = 800 // CUDA_ERROR_NOT_PERMITTED
	ErrorNotSupported    Result = 801 // CUDA_ERROR_NOT_SUPPORTED
	ErrorIllegalState    Result = 401 // CUDA_ERROR_ILLEGAL_STATE
	ErrorTimeout         Result = 909 // CUDA_ERROR_TIMEOUT
	ErrorUnknown         Result = 999 // CUDA_ERROR_UNKNOWN
	ErrorNotFound        Result = 500 // CUDA_ERROR_NOT_FOUND
	ErrorNotReady        Result = 600 // CUDA_ERROR_NOT_READY
	ErrorOperatingSystem Result = 304 // CUDA_ERROR_OPERATING_SYSTEM
	ErrorInsufficientDrv Result = 35  // CUDA_ERROR_INSUFFICIENT_DRIVER
)

// resultNames covers the codes the checkpoint API documents plus the common
// ones, so that messages stay readable when the driver's own cuGetErrorName
// is not available (fake drivers in tests, injected failures).
var resultNames = map[Result][2]string{
	Success:              {"CUDA_SUCCESS", "no error"},
	ErrorInvalidValue:    {"CUDA_ERROR_INVALID_VALUE", "invalid argument"},
	ErrorOutOfMemory:     {"CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
	ErrorNotInitialized:  {"CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
	ErrorDeinitialized:   {"CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
	ErrorInsufficientDrv: {"CUDA_ERROR_INSUFFICIENT_DRIVER", "CUDA driver version is insufficient for CUDA runtime version"},
	ErrorNoDevice:        {"CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
	ErrorIllegalState:    {"CUDA_ERROR_ILLEGAL_STATE", "the operation cannot be performed in the present state"},
	ErrorNotFound:        {"CUDA_ERROR_NOT_FOUND", "named symbol not found"},
	ErrorNotReady:        {"CUDA_ERROR_NOT_READY", "device not ready"},
	ErrorOperatingSystem: {"CUDA_ERROR_OPERATING_SYSTEM", "OS call failed or operation not supported on this OS"},
	ErrorNotPermitted:    {"CUDA_ERROR_NOT_PERMITTED", "operation not permitted"},
	ErrorNotSupported:    {"CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
	ErrorTimeout:         {"CUDA_ERROR_TIMEOUT", "timeout reached"},
	ErrorUnknown:         {"CUDA_ERROR_UNKNOWN", "unknown error"},
}

// Name returns the CUresult's symbolic name from a built-in table, or
// "CUDA_ERROR_<code>" for codes the table does not know.
func (r Result) Name() string {
	if n, ok := resultNames[r]; ok {
		return n[0]
	}
	return fmt.Sprintf("CUDA_ERROR_%d", int32(r))
}

// Description returns the driver's usual description of the code from a
// built-in table, or "" when the table does not know it.
func (r Result) Description() string {
	return resultNames[r][1]
}

// Error is a failed CUDA driver API call.
type Error struct {
	// Op is the driver function that failed, e.g. "cuCheckpointProcessLock".
	Op string
	// Code is the CUresult it returned.
	Code Result
	// Name is the symbolic name (cuGetErrorName), e.g. "CUDA_ERROR_NOT_INITIALIZED".
	Name string
	// Description is the driver's text (cuGetErrorString), e.g. "initialization error".
	Description string
}

// NewError builds an Error for code, naming it from the built-in table.
func NewError(op string, code Result) *Error {
	return &Error{Op: op, Code: code, Name: code.Name(), Description: code.Description()}
}

func (e *Error) Error() string {
	name := e.Name
	if name == "" {
		name = e.Code.Name()
	}
	if e.Description == "" {
		return fmt.Sprintf("%s: %s (%d)", e.Op, name, int32(e.Code))
	}
	return fmt.Sprintf("%s: %q (%s, %d)", e.Op, e.Description, name, int32(e.Code))
}

// ResultOf returns the CUresult carried by err, or Success and false when err
// is not (and does not wrap) an *Error.
func ResultOf(err error) (Result, bool) {
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Code, true
	}
	return Success, false
}
