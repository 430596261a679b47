package objectstore

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddle "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go/middleware"
)

// Defaults of RetryPolicy.
const (
	DefaultRetryDeadline = 60 * time.Second
	DefaultMaxBackoff    = 5 * time.Second
	retryBaseDelay       = 100 * time.Millisecond
	retryMaxAttempts     = 1000 // the deadline ends retries first
)

// RetryPolicy is how the requests of an aws-sdk-go-v2 client (the S3
// store's, and the mount's KMS client) ride out faults: every retryable
// failure (connection refused or reset, a lost reply, 5xx, throttling such
// as S3's 503 SlowDown or KMS's ThrottlingException) is retried with
// exponential backoff and full jitter (100 ms doubling, capped at
// MaxBackoff) until the operation has been retrying for Deadline; the
// failure of the last attempt is then returned. There is no client-side
// retry quota: an outage longer than a token bucket allows must still be
// ridden out.
//
// Install it on a client with its Retryer and APIOptions:
//
//	o.Retryer = p.Retryer()
//	o.APIOptions = append(o.APIOptions, p.Middleware)
type RetryPolicy struct {
	// Deadline bounds the time one operation spends retrying (measured
	// from its first attempt); 0 means DefaultRetryDeadline. An attempt
	// still running at the deadline is not cut short (see AttemptTimeout),
	// and a retry is started only before it.
	Deadline time.Duration
	// MaxBackoff caps one backoff; 0 means DefaultMaxBackoff.
	MaxBackoff time.Duration
	// AttemptTimeout, if positive, bounds each attempt; an attempt that
	// times out is retried (within Deadline). Only for clients whose
	// responses are read whole inside the attempt (KMS): it would cut an S3
	// GetObject body being streamed.
	AttemptTimeout time.Duration
	// OnRetry, if set, is called before each retry, with the operation
	// ("S3.PutObject"), the attempt that failed (1-based), its error and
	// whether it was throttling. Throttles counts those for the caller's
	// logs.
	OnRetry func(op string, attempt int, err error, throttled bool)
	// Throttles, if set, is incremented for every throttled attempt.
	Throttles *atomic.Int64
}

func (p RetryPolicy) deadline() time.Duration {
	if p.Deadline > 0 {
		return p.Deadline
	}
	return DefaultRetryDeadline
}

func (p RetryPolicy) maxBackoff() time.Duration {
	if p.MaxBackoff > 0 {
		return p.MaxBackoff
	}
	return DefaultMaxBackoff
}

// Retryer returns the SDK retryer of p: retry.NewStandard with p's backoff,
// no retry quota and enough attempts that the deadline ends them.
func (p RetryPolicy) Retryer() aws.Retryer {
	maxB := p.maxBackoff()
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = retryMaxAttempts
		o.MaxBackoff = maxB
		o.RateLimiter = ratelimit.None
		o.Backoff = retry.BackoffDelayerFunc(func(attempt int, err error) (time.Duration, error) {
			return backoff(attempt, maxB), nil
		})
		o.Retryables = append([]retry.IsErrorRetryable{stopRetrying{}}, o.Retryables...)
	})
}

// backoff is the delay before retry number attempt (1-based): full jitter
// in [d/2, d) with d = 100 ms · 2^(attempt-1), capped at maxB.
func backoff(attempt int, maxB time.Duration) time.Duration {
	d := maxB
	if attempt < 20 {
		d = min(maxB, retryBaseDelay<<max(attempt-1, 0))
	}
	return d/2 + rand.N(d/2+1)
}

// Middleware adds p's deadline, attempt timeout and retry accounting to a
// client's stack (an APIOptions entry).
func (p RetryPolicy) Middleware(stack *middleware.Stack) error {
	if err := stack.Initialize.Add(middleware.InitializeMiddlewareFunc("csefsRetryStart",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			if _, ok := ctx.Value(retryStartKey{}).(*retryState); !ok {
				ctx = context.WithValue(ctx, retryStartKey{}, &retryState{start: time.Now()})
			}
			return next.HandleInitialize(ctx, in)
		}), middleware.Before); err != nil {
		return err
	}
	deadline := p.deadline()
	return stack.Finalize.Insert(middleware.FinalizeMiddlewareFunc("csefsRetryAttempt",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			st, _ := ctx.Value(retryStartKey{}).(*retryState)
			attemptCtx := ctx
			if p.AttemptTimeout > 0 {
				var cancel context.CancelFunc
				attemptCtx, cancel = context.WithTimeout(ctx, p.AttemptTimeout)
				defer cancel()
			}
			out, md, err := next.HandleFinalize(attemptCtx, in)
			if err == nil || st == nil {
				return out, md, err
			}
			st.attempts++
			if ctx.Err() == nil && attemptCtx.Err() != nil {
				// Our attempt timeout, not the caller's cancellation:
				// a retryable timeout.
				err = &attemptTimeout{err}
			}
			if time.Since(st.start) >= deadline || ctx.Err() != nil {
				return out, md, &deadlineReached{err: err, attempts: st.attempts, after: time.Since(st.start)}
			}
			throttled := isThrottle(err)
			if throttled && p.Throttles != nil {
				p.Throttles.Add(1)
			}
			if p.OnRetry != nil && retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(err).Bool() {
				p.OnRetry(operationName(ctx), st.attempts, err, throttled)
			}
			return out, md, err
		}), "Retry", middleware.After)
}

type retryStartKey struct{}

// retryState is one operation's retry bookkeeping; only its own attempts
// (which are sequential) touch it.
type retryState struct {
	start    time.Time
	attempts int
}

// attemptTimeout is an attempt cut by RetryPolicy.AttemptTimeout: retryable.
type attemptTimeout struct{ err error }

func (e *attemptTimeout) Error() string        { return "attempt timed out: " + e.err.Error() }
func (e *attemptTimeout) Unwrap() error        { return e.err }
func (e *attemptTimeout) RetryableError() bool { return true }
func (e *attemptTimeout) Timeout() bool        { return true }

// deadlineReached ends the retries of an operation past its deadline.
type deadlineReached struct {
	err      error
	attempts int
	after    time.Duration
}

func (e *deadlineReached) Error() string {
	return "gave up after " + strconv.Itoa(e.attempts) + " attempts in " + e.after.Round(time.Millisecond).String() + " (retry deadline): " + e.err.Error()
}
func (e *deadlineReached) Unwrap() error { return e.err }

// stopRetrying makes deadlineReached final, ahead of every other retryable
// check (which would find, say, a retryable connection error inside it).
type stopRetrying struct{}

func (stopRetrying) IsErrorRetryable(err error) aws.Ternary {
	var d *deadlineReached
	if errors.As(err, &d) {
		return aws.FalseTernary
	}
	var t *attemptTimeout
	if errors.As(err, &t) {
		return aws.TrueTernary
	}
	return aws.UnknownTernary
}

// isThrottle reports whether err is a throttling answer (S3 503 SlowDown,
// KMS ThrottlingException, 429).
func isThrottle(err error) bool {
	return retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err).Bool()
}

func operationName(ctx context.Context) string {
	return awsmiddle.GetServiceID(ctx) + "." + awsmiddle.GetOperationName(ctx)
}
