package fsbridge

import "herd/proto"

// defaultDial connects to a translator with the bridge's notifier, so the
// translator's invalidations reach the kernel.
func defaultDial(socket string, n *Notifier) (proto.FileSystem, error) {
	return proto.Dial(socket, proto.ClientOptions{Notifier: n})
}
