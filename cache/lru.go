package cache

import "slices"

// lruList is a doubly linked list of blocks, most recently used at head.
type lruList struct{ head, tail *block }

func (l *lruList) pushFront(b *block) {
	b.prev, b.next = nil, l.head
	if l.head != nil {
		l.head.prev = b
	}
	l.head = b
	if l.tail == nil {
		l.tail = b
	}
}

func (l *lruList) remove(b *block) {
	if b.prev != nil {
		b.prev.next = b.next
	} else if l.head == b {
		l.head = b.next
	}
	if b.next != nil {
		b.next.prev = b.prev
	} else if l.tail == b {
		l.tail = b.prev
	}
	b.prev, b.next = nil, nil
}

// sortByUsed orders blocks least recently used first.
func sortByUsed(bs []*block) {
	slices.SortFunc(bs, func(a, b *block) int {
		switch {
		case a.used < b.used:
			return -1
		case a.used > b.used:
			return 1
		}
		return 0
	})
}
