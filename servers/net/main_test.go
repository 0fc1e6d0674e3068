package net

import (
	"os"
	"testing"

	"herd/subenv/netattach/nstest"
)

func TestMain(m *testing.M) {
	nstest.Main()
	os.Exit(m.Run())
}
