package objectstore

// UploadEvent reports a change in a Writer's multipart upload to
// S3Options.OnUpload.
type UploadEvent struct {
	Key      string // relative to the store's prefix, like every Store key
	UploadID string
	// Done is false when the upload has just been created, true once it has
	// been completed or aborted. An upload with no Done event (the process
	// died, or the abort itself failed) stays open on the server, holding
	// storage, until AbortUpload or a lifecycle rule removes it.
	Done bool
}

func (s *S3Store) uploadEvent(key, id string, done bool) {
	if s.opt.OnUpload != nil {
		s.opt.OnUpload(UploadEvent{Key: key, UploadID: id, Done: done})
	}
}
