package relay_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"pos/relay"
)

// jetStream returns a JetStream context on its own connection to the test
// NATS, for inspecting and deleting the streams a test's relay creates.
func jetStream(t *testing.T) nats.JetStreamContext {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatalf("connect to NATS at %s: %v (make test starts it)", natsURL, err)
	}
	t.Cleanup(nc.Close)
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// pubTopic returns a topic no other test uses, checks that its stream does
// not exist yet, and deletes the stream when the test ends.
func pubTopic(t *testing.T, js nats.JetStreamContext) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	topic := "pos_test_pub_" + hex.EncodeToString(b[:])
	if _, err := js.StreamInfo(topic); !errors.Is(err, nats.ErrStreamNotFound) {
		t.Fatalf("stream %s before the test: err = %v, want ErrStreamNotFound", topic, err)
	}
	t.Cleanup(func() {
		if err := js.DeleteStream(topic); err != nil && !errors.Is(err, nats.ErrStreamNotFound) {
			t.Errorf("delete stream %s: %v", topic, err)
		}
	})
	return topic
}

// newTestPublisher returns a relay Publisher closed when the test ends.
func newTestPublisher(t *testing.T) *relay.Publisher {
	t.Helper()
	pub, err := relay.NewPublisher(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

// pubMsg is what a test published: a message's id (also its Nats-Msg-Id)
// and payload.
type pubMsg struct {
	id      string
	payload []byte
}

// pubBatch returns n messages with distinct ids and payloads naming tag and
// their index.
func pubBatch(tag string, n int) []pubMsg {
	ms := make([]pubMsg, n)
	for i := range ms {
		ms[i] = pubMsg{id: uuid.NewString(), payload: fmt.Appendf(nil, `{"tag":%q,"i":%d}`, tag, i)}
	}
	return ms
}

// watermill returns fresh Watermill messages for ms, each with its
// Nats-Msg-Id metadata set, as the relay sets it.
func watermill(ms []pubMsg) []*message.Message {
	out := make([]*message.Message, len(ms))
	for i, m := range ms {
		wm := message.NewMessage(m.id, slices.Clone(m.payload))
		wm.Metadata.Set(relay.MsgIDKey, m.id)
		out[i] = wm
	}
	return out
}

// checkStream fails the test unless topic's stream exists, takes exactly
// subject topic, and holds exactly want, in order, at sequences 1..len(want),
// each with its Nats-Msg-Id header.
func checkStream(t *testing.T, js nats.JetStreamContext, topic string, want []pubMsg) {
	t.Helper()
	info, err := js.StreamInfo(topic)
	if err != nil {
		t.Fatalf("stream %s: %v", topic, err)
	}
	if !slices.Equal(info.Config.Subjects, []string{topic}) {
		t.Errorf("stream %s subjects = %q, want [%q]", topic, info.Config.Subjects, topic)
	}
	if info.State.Msgs != uint64(len(want)) || info.State.FirstSeq != 1 || info.State.LastSeq != uint64(len(want)) {
		t.Fatalf("stream %s holds %d messages at seq %d..%d, want %d at 1..%d",
			topic, info.State.Msgs, info.State.FirstSeq, info.State.LastSeq, len(want), len(want))
	}
	for i, w := range want {
		seq := uint64(i + 1)
		m, err := js.GetMsg(topic, seq)
		if err != nil {
			t.Fatalf("stream %s seq %d: %v", topic, seq, err)
		}
		if m.Subject != topic {
			t.Errorf("stream %s seq %d: subject %q, want %q", topic, seq, m.Subject, topic)
		}
		if !bytes.Equal(m.Data, w.payload) {
			t.Fatalf("stream %s seq %d: payload %s, want %s (message %d of the call)", topic, seq, m.Data, w.payload, i)
		}
		if got := m.Header.Get(relay.MsgIDKey); got != w.id {
			t.Fatalf("stream %s seq %d: %s = %q, want %q", topic, seq, relay.MsgIDKey, got, w.id)
		}
	}
}

func TestPublisherCreatesStreamAndStoresBatchInOrder(t *testing.T) {
	js := jetStream(t)
	topic := pubTopic(t, js)
	pub := newTestPublisher(t)

	batch := pubBatch(topic, 500)
	if err := pub.Publish(topic, watermill(batch)...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	checkStream(t, js, topic, batch)
}

func TestPublisherDeduplicatesRepublishedBatch(t *testing.T) {
	js := jetStream(t)
	topic := pubTopic(t, js)
	pub := newTestPublisher(t)

	batch := pubBatch(topic, 500)
	if err := pub.Publish(topic, watermill(batch)...); err != nil {
		t.Fatalf("first Publish: %v", err)
	}
	checkStream(t, js, topic, batch)

	// The same messages again, as the relay republishes a batch after a
	// failure: fresh Watermill messages with the same ids.
	if err := pub.Publish(topic, watermill(batch)...); err != nil {
		t.Fatalf("second Publish: %v", err)
	}
	checkStream(t, js, topic, batch)

	// And from another Publisher, which finds the stream already there.
	if err := newTestPublisher(t).Publish(topic, watermill(batch)...); err != nil {
		t.Fatalf("Publish from a second Publisher: %v", err)
	}
	checkStream(t, js, topic, batch)
}

func TestPublisherConcurrentPublishesToDifferentTopics(t *testing.T) {
	const goroutines, perCall, calls = 8, 150, 2
	js := jetStream(t)
	pub := newTestPublisher(t)

	topics := make([]string, goroutines)
	batches := make([][]pubMsg, goroutines)
	for g := range goroutines {
		topics[g] = pubTopic(t, js)
		batches[g] = pubBatch(topics[g], perCall*calls)
	}

	start := make(chan struct{})
	errs := make([]error, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for c := range calls {
				part := batches[g][c*perCall : (c+1)*perCall]
				if err := pub.Publish(topics[g], watermill(part)...); err != nil {
					errs[g] = fmt.Errorf("call %d: %w", c, err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()

	for g := range goroutines {
		if errs[g] != nil {
			t.Errorf("goroutine %d, topic %s: Publish: %v", g, topics[g], errs[g])
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for g := range goroutines {
		checkStream(t, js, topics[g], batches[g])
	}
}

func TestPublisherFailsAfterClose(t *testing.T) {
	js := jetStream(t)
	known := pubTopic(t, js)
	fresh := pubTopic(t, js)
	pub := newTestPublisher(t)

	before := pubBatch(known, 10)
	if err := pub.Publish(known, watermill(before)...); err != nil {
		t.Fatalf("Publish before Close: %v", err)
	}
	if err := pub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// publish runs Publish and fails the test if it does not return within
	// a bound well below what a hang would take.
	publish := func(topic string, ms []pubMsg) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- pub.Publish(topic, watermill(ms)...) }()
		bound := relay.DefaultAckTimeout / 2
		select {
		case err := <-done:
			return err
		case <-time.After(bound):
			t.Fatalf("Publish to %s after Close did not return within %s", topic, bound)
			return nil
		}
	}

	// A topic whose stream this Publisher already made: no stream lookup,
	// straight to publishing.
	if err := publish(known, pubBatch(known, 50)); err == nil {
		t.Errorf("Publish to %s (stream known) after Close returned nil, want an error", known)
	} else {
		t.Logf("Publish to %s (stream known) after Close: %v", known, err)
	}
	checkStream(t, js, known, before)

	// A topic not seen before: the stream lookup fails.
	if err := publish(fresh, pubBatch(fresh, 50)); err == nil {
		t.Errorf("Publish to %s (new topic) after Close returned nil, want an error", fresh)
	} else {
		t.Logf("Publish to %s (new topic) after Close: %v", fresh, err)
	}
	if _, err := js.StreamInfo(fresh); !errors.Is(err, nats.ErrStreamNotFound) {
		t.Errorf("stream %s after a Publish on a closed Publisher: err = %v, want ErrStreamNotFound", fresh, err)
	}
}
