package httpfs_test

import (
	"net/url"
	"testing"
)

func httpfsURL(s string) (*url.URL, error) { return url.Parse(s) }

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
