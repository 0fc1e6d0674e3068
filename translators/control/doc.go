// Package control implements settrans, showtrans and fsysopts: attaching
// translators to nodes, showing them, and changing a running translator's
// options, with the Hurd's flags and meaning where they apply on Linux.
//
// A node lives in one of two worlds, told apart by the mount that holds it
// (/proc/self/mountinfo):
//
//   - Inside a subenvironment the node is on the fs bridge's FUSE mount
//     (source "herd"). The fs server that owns the node keeps its
//     translator records; settrans and friends reach it through extended
//     attributes on the node (XattrPassive, XattrActive, XattrGoaway,
//     XattrOptions), so nothing else is needed inside. On a node that
//     already has a translator the fs bridge sends these to the fs server
//     that owns the node, not to the translator (the Hurd's settrans and
//     fsysopts talk to the node underneath too).
//
//   - On the host, a passive translator is the record stored on the host
//     file (the xattr user.herd.translator, or the directory's side table
//     where xattrs are refused), which takes effect wherever that tree is
//     served by herd. An active translator is a process mounted on the node
//     by FUSE in the caller's mount namespace: a detached holder process
//     (settrans re-executed with a hidden flag) starts the translator with
//     its listening socket as fd 3, dials it, mounts it with the fs bridge
//     (source "herd:ARGV"), and unmounts and stops it when the translator
//     dies, when the mount goes away, or on settrans -g. A state file beside
//     the translator's socket in the runtime directory says which
//     translator serves which node. fsysopts talks to the translator on
//     its socket, then reads XattrRefresh on the node so the bridge drops
//     the kernel's cached copy before fsysopts returns.
//
// settrans has the Hurd's flags, with these differences. -P (--pause)
// shows the translator's pid and waits for a newline before the holder
// connects to it (to attach a debugger); -U (--underlying) hands the
// translator another file as fd 4. Both are for the host: inside a
// subenvironment the fs server starts translators. -R and -S are accepted
// and change nothing: a translator's children stop with it, and herd
// translators sync on goaway as they see fit. Two are left out: -L
// (--dereference, put the new translator on top of an existing one) and
// --stack (replace one but keep it running beneath). Linux could stack a
// FUSE mount on another, but a node has one translator record, one holder,
// one socket and one state file, found by the node's path by settrans -g,
// showtrans and fsysopts (and by the fs server inside a subenvironment);
// a second translator on that path would leave them no way to say which
// one they mean.
package control
