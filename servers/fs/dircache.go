package fs

import "golang.org/x/sys/unix"

// The directory cache keeps O_PATH descriptors of directory nodes, per
// layer, so most calls skip resolving the whole path again. A cached
// descriptor follows its directory like an inode does (a rename by the host
// underneath us is followed, never escaped: resolution from it stays
// beneath it).
//
// Rules: cached descriptors are used only under treeMu (shared or
// exclusive); they are closed only under treeMu held exclusively, at the end
// of an operation (wunlock), so no caller ever holds a closed one. Entries
// can be negative (-1: no such directory in that layer); anything that
// creates, removes or moves a directory marks the cache dirty: from then on
// it is bypassed, and it is dropped when the operation ends. The cache is
// bounded: when full, nothing new is added until the next exclusive
// operation (or the lookup that noticed) empties it.

const dirCacheMax = 1024

type dirKey struct {
	n     *node
	upper bool
}

// wlock takes the tree exclusively.
func (s *Server) wlock() { s.treeMu.Lock() }

// wunlock drops the directory cache if the operation invalidated it (or it
// is full), then releases the tree.
func (s *Server) wunlock() {
	s.cmu.Lock()
	if s.cacheDirty || len(s.dirCache) >= dirCacheMax {
		for _, fd := range s.dirCache {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
		s.dirCache = map[dirKey]int{}
		s.cacheDirty = false
	}
	s.cmu.Unlock()
	s.treeMu.Unlock()
}

func (s *Server) dirtyCache() {
	s.cmu.Lock()
	s.cacheDirty = true
	s.cmu.Unlock()
}

// cachedDir returns directory node d's descriptor in a layer (root is the
// layer's descriptor, comps d's path), -1 with ENOENT when the layer lacks
// it. owned says the caller must close it.
func (s *Server) cachedDir(d *node, upper bool, root int, comps []string) (fd int, owned bool, err error) {
	k := dirKey{d, upper}
	s.cmu.Lock()
	fd, ok := s.dirCache[k]
	if s.cacheDirty {
		ok = false // stale until dropped: resolve afresh
	}
	s.cmu.Unlock()
	if ok {
		if fd < 0 {
			return -1, false, unix.ENOENT
		}
		return fd, false, nil
	}
	fd, err = openDirAt(root, comps)
	if err != nil && err != unix.ENOENT {
		return -1, false, err
	}
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if len(s.dirCache) >= dirCacheMax || s.cacheDirty {
		return fd, err == nil, err
	}
	if old, ok := s.dirCache[k]; ok {
		// Raced with another reader: keep theirs.
		if fd >= 0 {
			unix.Close(fd)
		}
		if old < 0 {
			return -1, false, unix.ENOENT
		}
		return old, false, nil
	}
	s.dirCache[k] = fd
	return fd, false, err
}

func (s *Server) dropDirCache() {
	s.cmu.Lock()
	for _, fd := range s.dirCache {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	s.dirCache = map[dirKey]int{}
	s.cmu.Unlock()
}

func (s *Server) dirCacheFull() bool {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return len(s.dirCache) >= dirCacheMax
}
