package task

import (
	"context"
	"slices"
	"testing"
)

// TestBuiltinTypesAreTheEngineTypes: what a node announces before its
// engine exists is what the engine then executes.
func TestBuiltinTypesAreTheEngineTypes(t *testing.T) {
	e := NewEngine(openStore(t), nil, nil, "self", Options{})
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	if got, want := e.Types(), BuiltinTypes(); !slices.Equal(got, want) {
		t.Fatalf("Engine.Types() = %v, BuiltinTypes() = %v", got, want)
	}
}
