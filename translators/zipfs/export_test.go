package zipfs

// UnixOwner is unixOwner, for the fuzz target.
var UnixOwner = unixOwner
