package fusefs

// Node names. A rename changes the key of a file node and the prefix of a
// directory node (and of every loaded node below it) while other operations
// may be reading them, so both are atomic pointers behind accessors.

// newFileNode returns the node of the object key.
func newFileNode(f *FS, key string) *fileNode {
	n := &fileNode{fsys: f}
	n.setKey(key)
	return n
}

// key is the node's object key.
func (n *fileNode) key() string { return *n.keyp.Load() }

func (n *fileNode) setKey(key string) { n.keyp.Store(&key) }

// newDirNode returns the node of the directory prefix ("" or "a/b/").
func newDirNode(f *FS, prefix string) *dirNode {
	d := &dirNode{fsys: f}
	d.setPrefix(prefix)
	return d
}

// prefix is the directory's key prefix: "" for the root, else "a/b/".
func (d *dirNode) prefix() string { return *d.prefixp.Load() }

func (d *dirNode) setPrefix(prefix string) { d.prefixp.Store(&prefix) }
