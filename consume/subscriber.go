package consume

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
)

// subscriber is the Watermill subscriber of the partitions' durables: one
// JetStream push subscription per topic (bound to the shared durable, in its
// deliver group), whose messages go to the router the moment they arrive.
//
// Why not watermill-nats' subscriber, whose marshaler and delay this keeps:
// it hands a subscription's next message over only after the last one was
// acknowledged, so a partition's messages in flight are spread over as many
// subscriptions, and the broker picks one of them at random for each. A
// subscription that drew two holds its second back until the batch holding
// the first has committed, and the partition's next batch stops at that
// hole: under load batches stayed at about 7 messages whatever the backlog,
// and every batch is a PostgreSQL transaction. Here a partition's messages
// reach the router in order and the batcher together (each handler on a
// goroutine of its own, so in nearly that order), and JetStream's
// MaxAckPending alone bounds how many are in flight.
//
// Each message handed over waits (at most ackWait) for the router's answer:
// an Ack is sent on as JetStream's, a Nack as a delayed negative
// acknowledgement (nakDelay by delivery count). Safe for concurrent use;
// Close may be called more than once (the router calls it once per
// handler).
type subscriber struct {
	js        nats.JetStreamContext
	queue     string
	subOpts   []nats.SubOpt
	ackWait   time.Duration
	nakDelay  doublingDelay
	unmarshal wmnats.Unmarshaler
	logger    watermill.LoggerAdapter

	closing   chan struct{} // closed first by Close: no more hand-overs
	closeOnce sync.Once

	// hand is held for reading while a message is handed over, and for
	// writing to set handClosed. Apart from mu, which Subscribe holds: a
	// hand-over waits for the router to read, and the router may still be
	// subscribing the next topic.
	hand       sync.RWMutex
	handClosed bool
	// inflight counts the messages handed over and not yet answered. Add
	// happens only in a subscription's callback, so Wait after every
	// subscription has drained (drain) sees them all.
	inflight sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	subs    []*nats.Subscription
	outputs []chan *message.Message
}

var _ message.Subscriber = (*subscriber)(nil)

func newSubscriber(js nats.JetStreamContext, queue string, ackWait time.Duration, nakDelay doublingDelay,
	logger watermill.LoggerAdapter, subOpts ...nats.SubOpt) *subscriber {
	return &subscriber{js: js, queue: queue, subOpts: subOpts, ackWait: ackWait, nakDelay: nakDelay,
		unmarshal: &wmnats.NATSMarshaler{}, logger: logger, closing: make(chan struct{})}
}

// Subscribe implements message.Subscriber: the topic's messages, until
// Close.
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("consume: subscriber closed")
	}
	sub, err := s.js.QueueSubscribe(topic, s.queue, func(m *nats.Msg) { s.deliver(ctx, topic, m, out) }, s.subOpts...)
	if err != nil {
		return nil, fmt.Errorf("consume: subscribe to %s: %w", topic, err)
	}
	s.subs = append(s.subs, sub)
	s.outputs = append(s.outputs, out)
	return out, nil
}

// deliver hands m to the router and leaves its answer to a goroutine of
// its own (answer), so that the subscription's next message follows at
// once. It runs on the subscription's goroutine, one message at a time, so
// a topic's messages reach the router in the stream's order.
func (s *subscriber) deliver(ctx context.Context, topic string, m *nats.Msg, out chan<- *message.Message) {
	msg, err := s.unmarshal.Unmarshal(m)
	if err != nil {
		// Not one of the relay's messages: nothing can ever apply it, and
		// redelivering it would only repeat this line. A real event it
		// stood for is filled from the store (the next message's
		// PrevPosition, or the tail check).
		s.logger.Error("consume: a message that is not Watermill's; terminated", err, watermill.LogFields{"topic": topic})
		if err := m.Term(); err != nil {
			s.logger.Error("consume: terminate a message", err, watermill.LogFields{"topic": topic})
		}
		return
	}
	mctx, cancel := context.WithCancel(ctx)
	msg.SetContext(mctx)
	s.hand.RLock()
	if s.handClosed {
		s.hand.RUnlock()
		cancel()
		return // left to JetStream: redelivered after AckWait
	}
	s.inflight.Add(1)
	select {
	case out <- msg:
	case <-s.closing:
		s.hand.RUnlock()
		s.inflight.Done()
		cancel()
		return
	}
	s.hand.RUnlock()
	go s.answer(m, msg, cancel)
}

// answer sends JetStream the router's answer for m (msg), or nothing when
// none comes within ackWait: JetStream redelivers it by then anyway.
func (s *subscriber) answer(m *nats.Msg, msg *message.Message, cancel context.CancelFunc) {
	defer s.inflight.Done()
	defer cancel()
	t := time.NewTimer(s.ackWait)
	defer t.Stop()
	var err error
	select {
	case <-msg.Acked():
		// Asynchronous: a lost acknowledgement only redelivers a message
		// the runner has applied, a no-op; waiting would cost a round trip.
		err = m.Ack()
	case <-msg.Nacked():
		delay := s.nakDelay.first
		if md, merr := m.Metadata(); merr == nil {
			delay = s.nakDelay.WaitTime(md.NumDelivered)
		}
		err = m.NakWithDelay(delay)
	case <-t.C:
		return
	}
	if err != nil { // quiet during a shutdown (the Consumer's drainedLogger)
		s.logger.Error("consume: answer JetStream", err, watermill.LogFields{"message_uuid": msg.UUID})
	}
}

// drain stops every subscription taking messages, hands the ones already
// delivered to this process over, and waits until the router has answered
// all of them, at most until timeout, and not at all once the connection
// nc is down: nothing could be acknowledged then. The connection must stay
// open for the answers to reach the broker.
func (s *subscriber) drain(nc *nats.Conn, timeout time.Duration) {
	// Nothing held can be acknowledged without the connection, and a
	// subscription's drain waits on a flush that a reconnecting
	// connection answers only once it is back (up to 10s a subscription).
	lost := nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED) // before the check: a loss in between is seen
	if !nc.IsConnected() {
		return
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	s.mu.Lock()
	subs := append([]*nats.Subscription(nil), s.subs...)
	s.mu.Unlock()
	// Every subscription stops at once; then each is waited for.
	var dones []<-chan nats.SubStatus
	for _, sub := range subs {
		done := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err != nil {
			continue // already closed, or the connection is
		}
		dones = append(dones, done)
	}
	for _, done := range dones {
		select {
		case <-done:
		case <-lost:
			return
		case <-deadline.C:
			return
		}
	}
	// Every callback has returned, so no Add can follow this Wait.
	answered := make(chan struct{})
	go func() { s.inflight.Wait(); close(answered) }()
	select {
	case <-answered:
	case <-lost:
	case <-deadline.C:
	}
}

// Close implements message.Subscriber: the subscriptions end and the
// outputs close. Messages not yet answered are left to JetStream.
func (s *subscriber) Close() error {
	s.closeOnce.Do(func() { close(s.closing) }) // first: unblocks a hand-over holding hand
	s.hand.Lock()
	s.handClosed = true
	s.hand.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	subs, outputs := s.subs, s.outputs
	s.mu.Unlock()
	var errs []error
	for _, sub := range subs {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			errs = append(errs, err)
		}
	}
	for _, out := range outputs {
		close(out) // no hand-over is under way: handClosed is set
	}
	return errors.Join(errs...)
}
