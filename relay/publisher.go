package relay

import (
	"errors"
	"fmt"
	"sync"
	"time"

	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
)

// DefaultAckTimeout bounds how long Publisher.Publish waits for JetStream's
// acknowledgements.
const DefaultAckTimeout = 5 * time.Second

// maxPendingAcks bounds the messages sent and not yet acknowledged on one
// connection; a Publish of more waits for room (nats.go's stall).
const maxPendingAcks = 4096

// Publisher is the Watermill publisher the relay is meant for: a
// message.Publisher to NATS JetStream whose Publish sends all of a call's
// messages at once (nats.go's asynchronous publish) and returns only when
// JetStream has acknowledged every one of them, or with the first failure.
//
// Why not watermill-nats' own publisher, which the consumers' side still
// uses: it waits for each message's acknowledgement before sending the next
// and asks for the stream's info on every call, one round trip per event
// and one more per topic. On a busy 2-core machine that capped the relay
// below what the sales load appends, and the projections' lag grew without
// bound. This one keeps everything else of it: the same NATSMarshaler
// (metadata become headers, Nats-Msg-Id among them, so JetStream drops
// copies), and the same provisioning (a topic's stream, named like it, with
// the server's defaults, is created on the topic's first use, once per
// Publisher).
//
// A timeout fails every message then waiting for its acknowledgement, this
// call's and concurrent calls' alike (see Publish).
//
// When a Publish fails part-way, some of its messages may be stored and
// others not, so a partition's messages can reach the stream out of order
// once the relay publishes the batch again; the copies are dropped, and
// consumers put a partition back in order by PrevPosition (and fill from
// the store what is missing). Safe for concurrent use.
type Publisher struct {
	nc         *nats.Conn
	js         nats.JetStreamContext
	marshaler  wmnats.Marshaler
	ackTimeout time.Duration

	mu      sync.Mutex
	streams map[string]bool // topics whose stream is known to exist
}

// NewPublisher connects to the NATS server at natsURL and returns the
// relay's publisher; see Publisher. The connection reconnects for as long
// as it takes (the relay retries a failed batch until the broker is back);
// opts come after that default and may override it.
func NewPublisher(natsURL string, opts ...nats.Option) (*Publisher, error) {
	nc, err := nats.Connect(natsURL, append([]nats.Option{nats.MaxReconnects(-1)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("relay: connect to NATS: %w", err)
	}
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(maxPendingAcks))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("relay: JetStream: %w", err)
	}
	return &Publisher{nc: nc, js: js, marshaler: &wmnats.NATSMarshaler{}, ackTimeout: DefaultAckTimeout,
		streams: map[string]bool{}}, nil
}

// Publish implements message.Publisher: it returns nil once JetStream has
// acknowledged every message (stored, or dropped as a copy).
func (p *Publisher) Publish(topic string, messages ...*message.Message) error {
	if err := p.ensureStream(topic); err != nil {
		return err
	}
	futures := make([]nats.PubAckFuture, 0, len(messages))
	for _, m := range messages {
		nm, err := p.marshaler.Marshal(topic, m)
		if err != nil {
			return fmt.Errorf("relay: marshal message %s: %w", m.UUID, err)
		}
		f, err := p.js.PublishMsgAsync(nm)
		if err != nil {
			return fmt.Errorf("relay: publish to %s: %w", topic, err)
		}
		futures = append(futures, f)
	}
	timeout := time.NewTimer(p.ackTimeout)
	defer timeout.Stop()
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrNoStreamResponse) {
				p.forgetStream(topic) // deleted meanwhile: made again on the next call
			}
			return fmt.Errorf("relay: publish message %s to %s: %w", messages[i].UUID, topic, err)
		case <-timeout.C:
			// nats.go keeps an unacknowledged message pending for good, and
			// enough of them would stall every later publish: fail them all
			// (the relay publishes the whole batch again anyway).
			p.js.CleanupPublisher()
			return fmt.Errorf("relay: publish to %s: no acknowledgement within %s", topic, p.ackTimeout)
		}
	}
	return nil
}

// ensureStream creates topic's stream unless this Publisher already saw
// it exist.
func (p *Publisher) ensureStream(topic string) error {
	p.mu.Lock()
	known := p.streams[topic]
	p.mu.Unlock()
	if known {
		return nil
	}
	if err := EnsureStream(p.js, topic); err != nil {
		return err
	}
	p.mu.Lock()
	p.streams[topic] = true
	p.mu.Unlock()
	return nil
}

func (p *Publisher) forgetStream(topic string) {
	p.mu.Lock()
	delete(p.streams, topic)
	p.mu.Unlock()
}

// EnsureStream creates topic's stream, named like it with the topic as its
// only subject and the server's defaults (as watermill-nats AutoProvision
// makes it), unless it exists. The relay and the consumers both call it, so
// either may start first.
func EnsureStream(js nats.JetStreamContext, topic string) error {
	_, err := js.StreamInfo(topic)
	if errors.Is(err, nats.ErrStreamNotFound) {
		_, err = js.AddStream(&nats.StreamConfig{Name: topic, Subjects: []string{topic}})
		if errors.Is(err, nats.ErrStreamNameAlreadyInUse) {
			err = nil // made meanwhile, by a consumer or another relay
		}
	}
	if err != nil {
		return fmt.Errorf("relay: stream %s: %w", topic, err)
	}
	return nil
}

// Close implements message.Publisher: it closes the connection.
func (p *Publisher) Close() error {
	p.nc.Close()
	return nil
}
