package fsbridge

import "testing"

// The id map of a plain user with an /etc/subuid range: namespace root is
// the user, 1..count the range, everything else the namespace's root on the
// way in and the overflow id on the way out.
func TestIDMapRanges(t *testing.T) {
	m := IDMap{HostUid: 1011, HostGid: 1012, UidStart: 558752, UidCount: 65536, GidStart: 600000, GidCount: 1000}
	for _, c := range []struct{ in, want uint32 }{{0, 1011}, {1, 558752}, {1000, 558752 + 999}, {65536, 558752 + 65535}, {65537, overflowID}} {
		if got := m.uidToHost(c.in); got != c.want {
			t.Errorf("uidToHost(%d) = %d, want %d", c.in, got, c.want)
		}
	}
	for _, c := range []struct{ in, want uint32 }{{0, 1012}, {1, 600000}, {1000, 600999}, {1001, overflowID}} {
		if got := m.gidToHost(c.in); got != c.want {
			t.Errorf("gidToHost(%d) = %d, want %d", c.in, got, c.want)
		}
	}
	for _, c := range []struct{ in, want uint32 }{{1011, 0}, {0, 0}, {558751, 0}, {558752, 1}, {558752 + 999, 1000}, {558752 + 65536, 0}, {1000, 0}} {
		if got := m.uidFromHost(c.in); got != c.want {
			t.Errorf("uidFromHost(%d) = %d, want %d", c.in, got, c.want)
		}
	}
	if got := m.gidFromHost(600999); got != 1000 {
		t.Errorf("gidFromHost(600999) = %d, want 1000", got)
	}
	// Without a range: the user alone, as before.
	one := IDMap{HostUid: 1011, HostGid: 1011}
	if one.uidToHost(0) != 1011 || one.uidToHost(1) != overflowID || one.uidFromHost(5) != 0 || one.gidFromHost(1011) != 0 {
		t.Errorf("single map wrong")
	}
	id := IDMap{Identity: true}
	if id.uidToHost(7) != 7 || id.gidFromHost(9) != 9 {
		t.Errorf("identity map wrong")
	}
}
