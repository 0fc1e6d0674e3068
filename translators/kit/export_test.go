package kit

// Known is the number of nodes the adapter has numbers for (root included).
func (fs *FS) Known() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return len(fs.byID)
}
