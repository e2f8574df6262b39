package task

// BuiltinTypes returns, sorted, the task types every Engine executes
// (Options.Executors aside): the capabilities a node announces, known
// before its engine is built.
func BuiltinTypes() []string {
	return []string{TypeAdd, TypeSearch, TypeChunk, TypeEmbed}
}
