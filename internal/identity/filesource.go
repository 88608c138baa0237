package identity

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/fsnotify/fsnotify"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// FileSource is an identity Source read from PEM files: an SVID
// certificate chain, its private key and the trust bundle of its trust
// domain. It reloads whenever anything changes in the files' directories
// (including Kubernetes-style symlink swaps); a set of files that does not
// load or validate is logged and the previous identity stays.
//
// A FileSource is safe for concurrent use.
type FileSource struct {
	*state
	certFile, keyFile, bundleFile string
	cfg                           config
	watcher                       *fsnotify.Watcher
	done                          chan struct{}
	closeOnce                     sync.Once
	closeErr                      error
}

// NewFileSource loads the files and starts watching them. It does not
// block beyond reading the files. Close stops the watch.
func NewFileSource(certFile, keyFile, bundleFile string, opts ...Option) (*FileSource, error) {
	s := &FileSource{
		state:      newState(),
		certFile:   certFile,
		keyFile:    keyFile,
		bundleFile: bundleFile,
		cfg:        newConfig(opts),
		done:       make(chan struct{}),
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	dirs := map[string]bool{}
	for _, f := range []string{certFile, keyFile, bundleFile} {
		dirs[filepath.Dir(f)] = true
	}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			w.Close()
			return nil, fmt.Errorf("identity: watch %s: %w", d, err)
		}
	}
	// Watch first, then load, so no change between the two is missed.
	if _, err := s.reload(); err != nil {
		w.Close()
		return nil, err
	}
	s.watcher = w
	go s.run()
	return s, nil
}

// Close stops watching the files and waits for the watcher goroutine.
// Afterwards the source's methods return ErrClosed.
func (s *FileSource) Close() error {
	s.closeOnce.Do(func() {
		s.state.close()
		s.closeErr = s.watcher.Close()
		<-s.done
	})
	return s.closeErr
}

func (s *FileSource) run() {
	defer close(s.done)
	for {
		select {
		case _, ok := <-s.watcher.Events:
			if !ok {
				return
			}
			if changed, err := s.reload(); err != nil {
				s.cfg.log.Warn("identity: reload failed, keeping current SVID", "err", err)
			} else if changed {
				s.cfg.log.Info("identity: reloaded SVID from files", "cert", s.certFile)
			}
		case err, ok := <-s.watcher.Errors:
			if !ok {
				return
			}
			s.cfg.log.Warn("identity: watching files", "err", err)
		}
	}
}

// reload reads and validates the files and installs them if they differ
// from the current identity.
func (s *FileSource) reload() (bool, error) {
	svid, err := x509svid.Load(s.certFile, s.keyFile)
	if err != nil {
		return false, fmt.Errorf("identity: %w", err)
	}
	bundle, err := x509bundle.Load(svid.ID.TrustDomain(), s.bundleFile)
	if err != nil {
		return false, fmt.Errorf("identity: %w", err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(timeNow())); err != nil {
		return false, fmt.Errorf("%w: %s: %w", ErrInvalidSVID, s.certFile, err)
	}
	old, oldBundles := s.current()
	if old != nil && sameChain(old, svid) {
		if ob, err := oldBundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain()); err == nil && ob.Equal(bundle) {
			return false, nil
		}
	}
	if err := s.state.set(svid, x509bundle.NewSet(bundle)); err != nil {
		return false, err
	}
	return true, nil
}

func sameChain(a, b *x509svid.SVID) bool {
	if len(a.Certificates) != len(b.Certificates) {
		return false
	}
	for i := range a.Certificates {
		if !bytes.Equal(a.Certificates[i].Raw, b.Certificates[i].Raw) {
			return false
		}
	}
	return true
}
