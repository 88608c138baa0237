package xdsserver

import (
	"errors"
	"fmt"
	"net/netip"
)

func errorf(format string, args ...any) error {
	return errors.New("xdsserver: " + fmt.Sprintf(format, args...))
}

func validIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
