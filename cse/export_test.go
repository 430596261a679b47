package cse

// BuildExampleProvider lets the external tests (package cse_test) build
// cse/exec-provider-example as exec_test.go does.
var BuildExampleProvider = buildExampleProvider
