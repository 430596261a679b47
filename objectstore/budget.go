package objectstore

import "sync"

// Budget is one bound on the memory that many users share: the read-ahead
// of every open file and the upload parts of every file being written.
//
// What a user needs to make progress at all (one ranged GET and a little
// decrypted read-ahead, one part buffer) is outside the budget, so that no
// user ever waits for another to let go: a file open but idle must not
// stall the others. What a user takes beyond that comes from the budget,
// with TryAcquire: when it says no, a reader reads ahead less and a writer
// uploads fewer parts at once (its write(2) waits for its own uploads).
//
// A nil *Budget never limits.
type Budget struct {
	mu    sync.Mutex
	limit int64
	used  int64
	users int // joined with Join, for TryAcquireShare
}

// NewBudget returns a budget of limit bytes; limit <= 0 means no limit.
func NewBudget(limit int64) *Budget {
	if limit <= 0 {
		return nil
	}
	return &Budget{limit: limit}
}

// TryAcquire takes n bytes if they are free now.
func (b *Budget) TryAcquire(n int64) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

// Release returns n bytes taken with TryAcquire.
func (b *Budget) Release(n int64) {
	if b == nil || n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if b.used < 0 {
		panic("objectstore: Budget released more than was taken")
	}
}

// Used is how many bytes are taken now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Limit is the budget's size; 0 for a nil budget.
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// Join counts one more user sharing the budget (a reader streaming ahead,
// a writer uploading parts) until its Leave: TryAcquireShare divides the
// budget among the users joined.
func (b *Budget) Join() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.users++
	b.mu.Unlock()
}

// Leave undoes one Join.
func (b *Budget) Leave() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.users--
	if b.users < 0 {
		panic("objectstore: Budget left more often than joined")
	}
}

// TryAcquireShare is TryAcquire for a joined user that holds held bytes of
// the budget already: it also says no when held+n would exceed the user's
// fair share, the limit divided by the users joined. So a reader that
// joined first cannot keep the whole budget from the readers that come
// after it: once they join, its window stops growing past its share, and
// as it gives back what it holds, they take their shares.
func (b *Budget) TryAcquireShare(n, held int64) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if share := b.limit / int64(max(b.users, 1)); held+n > share || b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}
