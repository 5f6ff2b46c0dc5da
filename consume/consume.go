// Package consume is the projector workers' half of the bus (SPEC §2, §8):
// a Watermill router that takes the relay's messages off NATS JetStream and
// applies them to the read models through a projections.Runner.
//
// # Topology
//
// The relay publishes each merchant partition to its own topic, and
// watermill-nats AutoProvision makes one JetStream stream per topic (see
// package relay). The consumer has one router handler per partition topic,
// and each subscribes through one durable push consumer on that partition's
// stream (Options.Durable; a durable is scoped to its stream, so the one
// name serves every partition) with a deliver (queue) group
// (Options.QueueGroup). Every worker process (`pos projector`, or `serve`
// itself) joins the same durables in the same queue group, so:
//
//   - each message goes to one worker of the group, never to all of them;
//   - a worker that stops or dies leaves its unacknowledged messages to the
//     others after AckWait, and the durable keeps the group's position while
//     no worker runs at all (a new durable starts with the whole stream);
//   - JetStream keeps at most Options.MaxAckPending messages of a partition
//     unacknowledged, and a worker's one subscription per partition hands
//     each to the router as it arrives (see subscriber), so that the
//     messages of a partition that arrive while one transaction runs are
//     applied together in the next (see batcher): the statements per event
//     fall as the rate rises.
//     Within a worker a batch is applied in feed order; the runner keeps
//     every stream in order and each event applied once whatever the
//     arrival order (a late event is a no-op, an early one fills the gap
//     from the store), so partitions may also be shared by several workers,
//     at the cost of such fills. MaxAckPending 1 applies a partition strictly
//     one message at a time.
//
// The alternative, a static assignment of partitions to workers, needs a
// coordinator to rebalance when a worker dies; the queue group gets failover
// from the broker for free, which is why it was chosen.
//
// # Delivery
//
// Delivery is at least once. A message is acknowledged only after
// Runner.HandleDeliveries committed its effect; a handler error is retried
// in process (Retry middleware, bounded), then negatively acknowledged, and
// JetStream redelivers it after Options.NakDelay, doubling with each
// delivery up to Options.MaxNakDelay, for as long as it takes (a database
// outage holds the partition rather than dropping events; a failure that
// lasts does not flood the log). A
// message whose handling a shutdown cut short is left to JetStream without
// retries or error lines, and redelivered after AckWait at the latest.
// Redeliveries and copies are harmless: the runner's effects are exactly
// once. A message that can never be applied (a payload that is not a relay
// Envelope, an event without a valid merchant) is a poison message: the
// PoisonQueue middleware publishes it to the dead-letter topic
// (DeadLetterTopic, its own JetStream stream) with the reason in its
// metadata, counts it (Consumer.DeadLettered and the
// pos.projector.dead_letters counter) and acknowledges it, so the next
// message of the partition goes on. If the message was a real event the
// runner later fills it from the store, noticing the gap by the next
// message's PrevPosition. A NATS message that is not a Watermill message at
// all (its headers do not decode) never reaches the router: the subscriber
// logs it and terminates it, and the gap is filled the same way.
//
// An event of the store that a projector cannot apply (its payload does not
// decode, or a projector refuses it as ErrBadEvent) is not a poison message:
// every batch and every gap fill holding it would fail the same way, so
// dead-lettering would only send the partition's next messages after it,
// and skipping it would leave the read models silently wrong. Its partition
// holds instead: the message is retried and redelivered, each failure
// logged, and the partition stalls (pos_projection_stalled_seconds grows,
// with Options.Heads; X-Min-Position reads answer 503) until a release that applies it is
// deployed. The other partitions go on. A refused message whose event the
// store does not hold (another environment's, one from before a restore)
// is poison, and is dead-lettered.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"pos/eventstore"
	"pos/internal/telemetry"
	"pos/projections"
	"pos/relay"
)

// Defaults of Options.
const (
	DefaultDurable       = "pos_projector"
	DefaultAckWait       = 30 * time.Second
	DefaultMaxAckPending = 256
	// DefaultReorderWait bounds how long a batch waits for a partition's
	// messages that arrived out of order (see batcher).
	DefaultReorderWait   = 20 * time.Millisecond
	DefaultMaxRetries    = 3
	DefaultRetryInterval = 100 * time.Millisecond
	DefaultNakDelay      = time.Second
	DefaultMaxNakDelay   = 30 * time.Second
	// DeadLetterSuffix follows the topic prefix in the dead-letter topic.
	DeadLetterSuffix = "dead_letter"
)

// Options tunes a Consumer. The zero value is usable.
type Options struct {
	// Partitions and TopicPrefix must match the relay's. Defaults
	// projections.DefaultPartitions (the runner's Partitions() is better)
	// and relay.DefaultTopicPrefix.
	Partitions  int
	TopicPrefix string
	// Durable names the JetStream durable consumer on every partition's
	// stream; QueueGroup is the deliver group the workers share. Workers
	// meant to split the work must agree on both. Defaults
	// "pos_projector" and the durable name.
	Durable    string
	QueueGroup string
	// AckWait is how long JetStream waits for a worker's acknowledgement
	// before redelivering (to any worker). Default 30s.
	AckWait time.Duration
	// MaxAckPending bounds the unacknowledged messages per partition, and
	// so a partition's batch; default 256, the most (see the package doc).
	// A window of 64 left the projections seconds behind after bursts at
	// 1,000 commands/s (lag p99 4.3–9.2 s against 0.53–0.55 s, same
	// hour).
	MaxAckPending int
	// ReorderWait bounds how long a batch waits for a partition's earlier
	// messages still in flight before the runner fills the gap from the
	// store instead. Default 20ms. A partition's messages reach the
	// router in order and the batcher each on a goroutine of its own, so a
	// late one is most likely a few scheduler turns behind; a busy machine
	// can make that milliseconds, and a fill reads a whole page of the
	// partition's feed for an event that was on its way. A hole that
	// outlasts it (another worker's message, or a lost one) turns the wait
	// off for the partition for a second.
	ReorderWait time.Duration
	// HoldUnhandled, when positive, lets a partition's messages that no
	// projector of the runner acts on (projections.Runner.Handles) wait up
	// to this long for one that it does, or for MaxAckPending of them,
	// before they are applied: applying them only moves the bookkeeping,
	// and a process manager, which ignores most events, would otherwise
	// pay a transaction for each one that arrives alone. A message it acts
	// on ends the wait of those before it, even behind a hole. Their
	// checkpoint and pos.projection.pending lag by as much. Keep it well
	// under TailCheck and AckWait. Default 0: applied at once.
	HoldUnhandled time.Duration
	// MaxRetries and RetryInterval bound the in-process retries of a
	// failing handler before the message is nacked. Defaults 3 and 100ms
	// (doubling).
	MaxRetries    int
	RetryInterval time.Duration
	// NakDelay is how long JetStream waits before redelivering a nacked
	// message the first time; it doubles with each delivery, up to
	// MaxNakDelay. Defaults 1s and 30s.
	NakDelay    time.Duration
	MaxNakDelay time.Duration
	// Upcast, when set, brings each delivered event to its type's current
	// schema (eventstore.Registry.Upcast), as the runner's store does for
	// the events it fills gaps with. The relay publishes events as stored.
	Upcast func(eventstore.RecordedEvent) (eventstore.RecordedEvent, error)
	// Meter, when set, records pos.projector.dead_letters and the gauges
	// pos.projection.pending and (with Heads) pos.projection.stalled.
	Meter metric.Meter
	// Tracer, when set, gives each delivery a consumer span ("consume
	// <durable>", until it is applied or fails), a child of the relay's
	// span whose context the message carries. The process managers'
	// commands are traced under the event's own trace context instead
	// (processes.Stock).
	Tracer trace.Tracer
	// Logger receives the router's logs. Default slog.Default.
	Logger *slog.Logger
	// NatsOptions are added to the subscriber's and dead-letter
	// publisher's connections.
	NatsOptions []nats.Option
	// Heads, when set, reads the relay's published head of every partition
	// (relay.PublishedHeads) for the tail check: every TailCheck, a
	// partition whose checkpoint is behind its published head and has not
	// moved since the last check is filled from the store up to the head.
	// Without it a message the broker lost (JetStream syncs its disk only
	// every few minutes, so a crash loses acknowledged messages) would be
	// noticed only through the partition's next message, which a quiet
	// merchant may not send for hours. TailCheck defaults to 10s; it is
	// also how often the pos.projection.pending gauge is refreshed.
	Heads     func(context.Context) ([]eventstore.Position, error)
	TailCheck time.Duration
}

// Consumer is a set of projector workers in one process; see the package
// documentation.
type Consumer struct {
	router  *message.Router
	nc      *nats.Conn // the subscriber's; drained on shutdown, after its subscriptions
	drained chan struct{}
	sub     *subscriber
	dlq     *wmnats.Publisher
	runner  *projections.Runner
	batches *batcher
	opts    Options
	dead    atomic.Int64
	handled atomic.Int64
	closing atomic.Bool // Run's context has ended
	counter metric.Int64Counter
	ready   chan struct{}
	closed  sync.Once
	// stalledSince holds, per partition, since when the tail check has seen
	// it behind the relay without moving (see pos.projection.stalled).
	stalledMu    sync.Mutex
	stalledSince map[int]time.Time
	stalledGauge metric.Float64ObservableGauge
	pendingGauge metric.Int64ObservableGauge
	// pendingNow is the last count of pending messages, -1 when unknown
	// (see refreshPending).
	pendingNow atomic.Int64
}

// DeadLetterTopic returns the dead-letter topic of prefix.
func DeadLetterTopic(prefix string) string { return prefix + DeadLetterSuffix }

// New returns a consumer of the relay's topics on the NATS server at url
// that applies every message to runner. Call Run.
func New(url string, runner *projections.Runner, opts Options) (*Consumer, error) {
	if runner == nil {
		return nil, errors.New("consume: a runner is required")
	}
	if opts.Partitions <= 0 {
		opts.Partitions = projections.DefaultPartitions
	}
	if opts.Partitions > 100 {
		return nil, fmt.Errorf("consume: at most 100 partitions, not %d", opts.Partitions)
	}
	if opts.TopicPrefix == "" {
		opts.TopicPrefix = relay.DefaultTopicPrefix
	}
	if opts.TailCheck <= 0 {
		opts.TailCheck = 10 * time.Second
	}
	if opts.Durable == "" {
		opts.Durable = DefaultDurable
	}
	if opts.QueueGroup == "" {
		opts.QueueGroup = opts.Durable
	}
	if opts.AckWait <= 0 {
		opts.AckWait = DefaultAckWait
	}
	if opts.MaxAckPending <= 0 {
		opts.MaxAckPending = DefaultMaxAckPending
	}
	if opts.MaxAckPending > 256 {
		return nil, fmt.Errorf("consume: at most 256 messages pending per partition, not %d", opts.MaxAckPending)
	}
	if opts.ReorderWait <= 0 {
		opts.ReorderWait = DefaultReorderWait
	}
	if opts.MaxRetries < 0 {
		opts.MaxRetries = 0
	} else if opts.MaxRetries == 0 {
		opts.MaxRetries = DefaultMaxRetries
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultRetryInterval
	}
	if opts.NakDelay <= 0 {
		opts.NakDelay = DefaultNakDelay
	}
	if opts.MaxNakDelay <= 0 {
		opts.MaxNakDelay = DefaultMaxNakDelay
	}
	opts.MaxNakDelay = max(opts.MaxNakDelay, opts.NakDelay)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	// Watermill's per-handler info lines (adding, starting, closing) are
	// debug noise in our logs.
	c := &Consumer{runner: runner, opts: opts, ready: make(chan struct{}),
		drained: make(chan struct{}),
		batches: newBatcher(runner, opts.ReorderWait, opts.MaxAckPending)}
	c.batches.hold = opts.HoldUnhandled
	c.pendingNow.Store(-1) // not counted yet
	logger := drainedLogger{watermill.NewSlogLoggerWithLevelMapping(opts.Logger, map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug,
	}), c}
	if opts.Meter != nil {
		ctr, err := opts.Meter.Int64Counter("pos.projector.dead_letters",
			metric.WithDescription("Messages the projector workers moved to the dead-letter topic"))
		if err != nil {
			return nil, fmt.Errorf("consume: counter: %w", err)
		}
		c.counter = ctr
		if c.pendingGauge, err = opts.Meter.Int64ObservableGauge("pos.projection.pending", metric.WithUnit("{event}"),
			metric.WithDescription("Events the relay published that this durable has not applied yet, over every partition (JetStream's undelivered and unacknowledged messages; every worker of the durable reports the same)")); err != nil {
			return nil, fmt.Errorf("consume: gauge: %w", err)
		}
		if opts.Heads != nil {
			// Observed while Run runs (see observe).
			if c.stalledGauge, err = opts.Meter.Float64ObservableGauge("pos.projection.stalled", metric.WithUnit("s"),
				metric.WithDescription("How long the longest-stalled partition has been behind the relay without applying anything (tail check; 0 when none)")); err != nil {
				return nil, fmt.Errorf("consume: gauge: %w", err)
			}
		}
	}

	// The subscriber's connection is ours to drain (see Run), once the
	// subscriptions have drained (subscriber.drain): what is left to flush
	// then is the acknowledgements.
	nc, err := nats.Connect(url, append(withReconnects(opts.NatsOptions), nats.DrainTimeout(drainWait))...)
	if err != nil {
		return nil, fmt.Errorf("consume: connect: %w", err)
	}
	prev := nc.Opts.ClosedCB
	nc.SetClosedHandler(func(nc *nats.Conn) {
		close(c.drained)
		if prev != nil {
			prev(nc)
		}
	})
	c.nc = nc
	js, err := nc.JetStream()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("consume: JetStream: %w", err)
	}
	// The options must match the durable that provisionDurables makes.
	sub := newSubscriber(js, opts.QueueGroup, opts.AckWait, doublingDelay{first: opts.NakDelay, most: opts.MaxNakDelay}, logger,
		nats.Durable(opts.Durable),
		nats.ManualAck(),
		nats.AckExplicit(),
		nats.DeliverAll(),
		nats.AckWait(opts.AckWait),
		nats.MaxAckPending(opts.MaxAckPending),
	)
	c.sub = sub
	dlq, err := wmnats.NewPublisher(wmnats.PublisherConfig{
		URL:         url,
		NatsOptions: withReconnects(opts.NatsOptions),
		Marshaler:   &wmnats.NATSMarshaler{},
		JetStream:   wmnats.JetStreamConfig{AutoProvision: true},
	}, logger)
	if err != nil {
		_ = sub.Close()
		return nil, fmt.Errorf("consume: dead-letter publisher: %w", err)
	}
	c.dlq = dlq

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
	if err != nil {
		c.closeClients()
		return nil, err
	}
	poison, err := middleware.PoisonQueueWithFilter(countingPublisher{Publisher: dlq, c: c},
		DeadLetterTopic(opts.TopicPrefix), Permanent)
	if err != nil {
		c.closeClients()
		return nil, err
	}
	// Outermost first: the poison queue sees an error only once the retries
	// are spent, and only a permanent one.
	router.AddMiddleware(
		poison,
		middleware.Retry{
			MaxRetries:      opts.MaxRetries,
			InitialInterval: opts.RetryInterval,
			MaxInterval:     10 * opts.RetryInterval,
			Multiplier:      2,
			ShouldRetry:     func(p middleware.RetryParams) bool { return !Permanent(p.Err) },
			Logger:          retryLogger{drainedLogger: logger, log: opts.Logger},
		}.Middleware,
	)
	if err := provisionDurables(url, opts); err != nil {
		c.closeClients()
		return nil, err
	}
	for p := range opts.Partitions {
		topic := relay.Topic(opts.TopicPrefix, p)
		router.AddConsumerHandler("projector_"+topic, topic, sub, c.handle)
	}
	c.router = router
	return c, nil
}

// provisionDurables creates each partition's stream (as the relay's
// AutoProvision would) and its shared durable consumer before any worker
// subscribes. A consumer that a subscription creates is deleted by nats.go
// when that subscription ends: the first worker to start would take the
// whole queue group's durable with it when it stops, and the others would
// stall. Created here, the durable belongs to no worker; subscriptions only
// bind to it. The settings must match the subscriber's options.
func provisionDurables(url string, opts Options) error {
	nc, err := nats.Connect(url, withReconnects(opts.NatsOptions)...)
	if err != nil {
		return fmt.Errorf("consume: provision: %w", err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return fmt.Errorf("consume: provision: %w", err)
	}
	for p := range opts.Partitions {
		topic := relay.Topic(opts.TopicPrefix, p)
		if err := relay.EnsureStream(js, topic); err != nil {
			return fmt.Errorf("consume: provision: %w", err)
		}
		info, err := js.ConsumerInfo(topic, opts.Durable)
		switch {
		case err == nil:
			// A durable made by an earlier release or configuration: the
			// subscriptions refuse to bind unless its settings are ours.
			if cfg := info.Config; cfg.AckWait != opts.AckWait || cfg.MaxAckPending != opts.MaxAckPending {
				cfg.AckWait, cfg.MaxAckPending = opts.AckWait, opts.MaxAckPending
				if _, err := js.UpdateConsumer(topic, &cfg); err != nil {
					return fmt.Errorf("consume: update consumer %s/%s: %w", topic, opts.Durable, err)
				}
			}
			continue
		case !errors.Is(err, nats.ErrConsumerNotFound):
			return fmt.Errorf("consume: provision consumer %s/%s: %w", topic, opts.Durable, err)
		}
		_, err = js.AddConsumer(topic, &nats.ConsumerConfig{
			Durable:        opts.Durable,
			DeliverSubject: nats.NewInbox(),
			DeliverGroup:   opts.QueueGroup,
			DeliverPolicy:  nats.DeliverAllPolicy,
			AckPolicy:      nats.AckExplicitPolicy,
			AckWait:        opts.AckWait,
			MaxAckPending:  opts.MaxAckPending,
			FilterSubject:  topic,
		})
		if err != nil && !errors.Is(err, nats.ErrConsumerNameAlreadyInUse) {
			return fmt.Errorf("consume: provision consumer %s/%s: %w", topic, opts.Durable, err)
		}
	}
	return nil
}

// doublingDelay is the wait before a nacked message's redelivery: first
// after its first delivery, doubling with each one after, at most most.
type doublingDelay struct{ first, most time.Duration }

var _ wmnats.Delay = doublingDelay{}

// WaitTime implements wmnats.Delay; delivered is the message's deliveries
// so far (1 for the first).
func (d doublingDelay) WaitTime(delivered uint64) time.Duration {
	wait := d.first
	for n := uint64(1); n < delivered && wait < d.most; n++ {
		wait *= 2
	}
	return min(wait, d.most)
}

// Permanent reports whether err means the message can never be applied:
// it goes to the dead-letter topic instead of being redelivered.
func Permanent(err error) bool {
	return errors.Is(err, relay.ErrInvalidMessage) || errors.Is(err, projections.ErrBadEvent)
}

// handle applies one message. Returning nil acknowledges it; an error
// retries, then nacks it (or dead-letters it when Permanent).
func (c *Consumer) handle(msg *message.Message) (err error) {
	ctx := msg.Context()
	if c.opts.Tracer != nil {
		var span trace.Span
		ctx, span = c.opts.Tracer.Start(propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(msg.Metadata)),
			"consume "+c.opts.Durable, trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.String("messaging.message.id", msg.UUID)))
		defer func() { telemetry.EndSpan(span, err, err != nil) }()
	}
	d, err := relay.Decode(msg.Payload)
	if err != nil {
		return err
	}
	if c.opts.Upcast != nil {
		if d.Event, err = c.opts.Upcast(d.Event); err != nil {
			return fmt.Errorf("consume: upcast event %s: %w", d.Event.ID, err)
		}
	}
	partition, err := c.runner.PartitionOf(d.Event)
	if err != nil {
		return err // no valid merchant: permanent, and must not fail a batch
	}
	if err := c.batches.submit(ctx, partition, d); err != nil {
		// The consumer is closing (this message's context, or the batch
		// leader's, ended with it): the message is left to JetStream,
		// without the retries and error lines of a failure. The connection
		// may be drained and closed by then, so the nack may not reach the
		// server: it is redelivered after AckWait at the latest. Any other
		// failure, this message's own context ended by its AckWait
		// included, is an error: retried, then logged.
		if c.closing.Load() && errors.Is(err, context.Canceled) {
			msg.Nack()
			return nil
		}
		if Permanent(err) {
			// A projector refused an event of its batch. An event of the
			// store is no poison message (see the package doc): it holds
			// its partition. A message that is not (another environment's,
			// one from before a restore) is.
			if stored, serr := c.runner.Stored(ctx, d.Event); serr == nil && !stored {
				return err
			}
			return fmt.Errorf("consume: partition %d holds: %v", partition, err)
		}
		return err
	}
	c.handled.Add(1)
	return nil
}

// Handled returns how many messages this consumer applied (and so
// acknowledged), redeliveries included.
func (c *Consumer) Handled() int64 { return c.handled.Load() }

// Run subscribes to every partition and handles messages until ctx ends,
// then closes the consumer and returns nil. It returns an error early when
// the router fails, subscribing included (router.Run returns that error
// without Running ever firing, so it is run in a goroutine and watched),
// and when the subscriber's connection closes for good (see withReconnects).
// Run may be called once.
//
// Shutdown drains the subscriptions before the router closes: they stop
// taking messages, and the messages already delivered to this worker are
// handled and acknowledged, not left to redeliver after AckWait. So the
// router runs on a context that ctx does not cancel, and is closed once the
// drain is done.
func (c *Consumer) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- c.router.Run(context.WithoutCancel(ctx)) }()
	select {
	case <-c.router.Running():
		close(c.ready)
	case err := <-errc:
		c.closeClients()
		if err == nil {
			err = errors.New("router stopped")
		}
		return fmt.Errorf("consume: %w", err)
	case <-ctx.Done():
		// Stopped while subscribing: a clean shutdown, once the router
		// has finished subscribing (a drain now would fail the
		// subscriptions still to come, and the router's close would time
		// out on them).
		select {
		case <-c.router.Running():
			close(c.ready)
			return c.shutdown(errc)
		case <-errc:
			c.closeClients()
			return nil
		}
	}
	if unregister, err := c.observe(); err != nil {
		c.opts.Logger.Warn("consume: gauges not observed", "err", err)
	} else {
		defer unregister()
	}
	tctx, stopTails := context.WithCancel(ctx)
	var tails sync.WaitGroup
	tails.Go(func() { c.checkTails(tctx) })
	tails.Go(func() { c.refreshPending(tctx) })
	defer func() { stopTails(); tails.Wait() }()
	select {
	case err := <-errc:
		c.closeClients()
		if err == nil {
			err = errors.New("router stopped")
		}
		return fmt.Errorf("consume: %w", err)
	case <-c.drained:
		// The connection closed, not by shutdown (it would drain it only
		// after ctx ended): it gave up reconnecting, or a NatsOptions
		// bounded that. Said, so that serve renews the consumer and
		// `pos projector` exits to its supervisor, rather than consuming
		// nothing more in silence.
		_ = c.shutdown(errc)
		return errors.New("consume: the broker connection closed")
	case <-ctx.Done():
	}
	return c.shutdown(errc)
}

// observe reports pos.projection.stalled and pos.projection.pending for
// this consumer until the returned function is called: a consumer replaced
// after it stopped must not go on reporting what it saw last.
func (c *Consumer) observe() (unregister func(), err error) {
	if c.pendingGauge == nil {
		return func() {}, nil
	}
	durable := metric.WithAttributes(attribute.String("durable", c.opts.Durable))
	gauges := []metric.Observable{c.pendingGauge}
	if c.stalledGauge != nil {
		gauges = append(gauges, c.stalledGauge)
	}
	reg, err := c.opts.Meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		if c.stalledGauge != nil {
			o.ObserveFloat64(c.stalledGauge, c.stalled().Seconds(), durable)
		}
		// Unknown (the broker did not answer): no value rather than a
		// stale one.
		if n := c.pendingNow.Load(); n >= 0 {
			o.ObserveInt64(c.pendingGauge, n, durable)
		}
		return nil
	}, gauges...)
	if err != nil {
		return nil, err
	}
	return func() {
		if err := reg.Unregister(); err != nil {
			c.opts.Logger.Warn("consume: gauges' callback not removed", "err", err)
		}
	}, nil
}

// refreshPending counts the pending messages (pending) every TailCheck until
// ctx ends, for the gauge to report: counted at each scrape, they would cost
// the broker a request per partition for every GET /metrics.
func (c *Consumer) refreshPending(ctx context.Context) {
	if c.pendingGauge == nil {
		return
	}
	t := time.NewTicker(c.opts.TailCheck)
	defer t.Stop()
	warned := false // once per outage
	for {
		n, err := c.pending(ctx)
		switch {
		case err == nil:
			warned = false
		case !warned && ctx.Err() == nil:
			c.opts.Logger.Warn("consume: pos.projection.pending unknown until the broker answers", "durable", c.opts.Durable, "err", err)
			warned = true
		}
		if err != nil {
			n = -1
		}
		c.pendingNow.Store(n)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pending is how many messages JetStream holds for the durable on every
// partition, delivered but not acknowledged or not delivered yet.
func (c *Consumer) pending(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.TailCheck)
	defer cancel()
	js, err := c.nc.JetStream(nats.Context(ctx))
	if err != nil {
		return 0, err
	}
	var n int64
	for p := range c.opts.Partitions {
		info, err := js.ConsumerInfo(relay.Topic(c.opts.TopicPrefix, p), c.opts.Durable)
		if err != nil {
			return 0, err
		}
		n += int64(info.NumPending) + int64(info.NumAckPending)
	}
	return n, nil
}

// stalled is how long the longest-stalled partition has been behind.
func (c *Consumer) stalled() time.Duration {
	c.stalledMu.Lock()
	defer c.stalledMu.Unlock()
	var longest time.Duration
	for _, since := range c.stalledSince {
		longest = max(longest, time.Since(since))
	}
	return longest
}

// moving records that partition p is not stalled.
func (c *Consumer) moving(p int) {
	c.stalledMu.Lock()
	defer c.stalledMu.Unlock()
	delete(c.stalledSince, p)
}

// markStalled records that partition p has been stalled since since (the
// check that first saw it behind at its checkpoint), unless it already was.
func (c *Consumer) markStalled(p int, since time.Time) {
	c.stalledMu.Lock()
	defer c.stalledMu.Unlock()
	if c.stalledSince == nil {
		c.stalledSince = map[int]time.Time{}
	}
	if _, ok := c.stalledSince[p]; !ok {
		c.stalledSince[p] = since
	}
}

// checkTails runs the tail check (Options.Heads) every TailCheck until ctx
// ends. Its failures are logged and the next check tries again.
func (c *Consumer) checkTails(ctx context.Context) {
	if c.opts.Heads == nil {
		return
	}
	t := time.NewTicker(c.opts.TailCheck)
	defer t.Stop()
	type behind struct {
		at   eventstore.Position // the checkpoint it was behind at
		seen time.Time           // the check that saw it
	}
	stalled := map[int]behind{} // behind at the last check
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		fill := map[int]eventstore.Position{} // stalled partitions, to their heads
		// The reads never wait longer than the interval (a pool used up
		// by hung transactions): the check fails, is logged, and what the
		// last one saw stands.
		cctx, cancel := context.WithTimeout(ctx, c.opts.TailCheck)
		heads, err := c.opts.Heads(cctx)
		if err != nil && ctx.Err() == nil {
			c.opts.Logger.Warn("projector tail check: reading the relay's heads failed; next check retries", "err", err)
		}
		for p, head := range heads {
			if p >= c.opts.Partitions {
				break
			}
			cp, err := c.runner.Checkpoint(cctx, p)
			if err != nil {
				if ctx.Err() == nil {
					c.opts.Logger.Warn("projector tail check: reading a checkpoint failed; next check retries", "partition", p, "err", err)
				}
				continue // a stalled partition stays stalled meanwhile
			}
			was, ok := stalled[p]
			switch {
			case !cp.Less(head):
				delete(stalled, p)
				c.moving(p)
			case !ok || was.at != cp:
				stalled[p] = behind{at: cp, seen: now} // behind, but maybe its messages are on their way
				c.moving(p)
			default:
				// Kept in stalled: a fill that moves the checkpoint resets
				// it at the next check, one that does not (a held
				// partition) is retried there.
				c.markStalled(p, was.seen)
				fill[p] = head
			}
		}
		cancel()
		for _, p := range slices.Sorted(maps.Keys(fill)) {
			c.opts.Logger.Warn("projector tail check: partition behind the relay and not moving; filling it from the store",
				"partition", p, "checkpoint", stalled[p].at.String(), "published", fill[p].String())
			if err := c.runner.FillPartition(ctx, p, fill[p]); err != nil && ctx.Err() == nil {
				c.opts.Logger.Error("projector tail check: fill failed; next check retries", "partition", p, "err", err)
			}
		}
	}
}

// withReconnects is opts after an unbounded reconnect budget (opts may set
// another). nats.go gives up after 60 attempts two seconds apart; a worker
// whose connection had closed for good after a two-minute broker outage
// would consume nothing more, its partitions moved only by tail checks.
func withReconnects(opts []nats.Option) []nats.Option {
	return append([]nats.Option{nats.MaxReconnects(-1)}, opts...)
}

// drainWait bounds each of a shutdown's two waits: for the messages this
// worker holds to be applied (a stuck one is redelivered after AckWait
// anyway), then for the connection to flush their acknowledgements. With
// the router's close after them, a stop fits in compose's 30 s grace.
const drainWait = 10 * time.Second

// shutdown drains the subscriber's connection, then closes the router and
// the clients; errc is the router's Run result.
func (c *Consumer) shutdown(errc <-chan error) error {
	c.closing.Store(true)
	// The subscriptions first, the connection open: the messages delivered
	// to this worker are applied and acknowledged, not left to redeliver
	// after AckWait. Their wait is bounded (drainWait, AckWait if shorter),
	// and skipped while the broker is unreachable.
	c.sub.drain(c.nc, min(c.opts.AckWait, drainWait))
	// A connection that cannot drain (NATS unreachable: it is
	// reconnecting) is not waited for either.
	if err := c.nc.Drain(); err == nil {
		<-c.drained // bounded by the connection's DrainTimeout
	}
	err := c.router.Close()
	<-errc
	c.closeClients()
	return err
}

// Close releases the NATS connections of a consumer that will not Run (or
// whose Run returned); Run closes them itself.
func (c *Consumer) Close() { c.closeClients() }

// Ready is closed once every partition's handler is subscribed and running.
func (c *Consumer) Ready() <-chan struct{} { return c.ready }

// DeadLettered returns how many messages this consumer moved to the
// dead-letter topic.
func (c *Consumer) DeadLettered() int64 { return c.dead.Load() }

// Topics returns the partition topics consumed, in partition order.
func (c *Consumer) Topics() []string {
	ts := make([]string, c.opts.Partitions)
	for p := range ts {
		ts[p] = relay.Topic(c.opts.TopicPrefix, p)
	}
	return ts
}

func (c *Consumer) closeClients() {
	c.closed.Do(func() {
		_ = c.sub.Close()
		_ = c.dlq.Close()
		c.nc.Close()
	})
}

// drainedLogger quiets the connection-closed and connection-draining errors
// logged once shutdown has begun draining: they are expected then, and mean
// nothing was lost.
type drainedLogger struct {
	watermill.LoggerAdapter
	c *Consumer
}

func (l drainedLogger) Error(msg string, err error, fields watermill.LogFields) {
	if (errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining)) && l.c.closing.Load() {
		l.LoggerAdapter.Debug(msg+": "+err.Error(), fields)
		return
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

func (l drainedLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return drainedLogger{l.LoggerAdapter.With(fields), l.c}
}

// retryLogger logs the Retry middleware's "retrying" errors as warnings:
// a retried attempt is not a failure yet (a message whose context ended
// while its partition caught up, a deadlock), and the last attempt's
// error is logged as an error where it ends (the router, the poison
// queue).
type retryLogger struct {
	drainedLogger
	log *slog.Logger
}

func (l retryLogger) Error(msg string, err error, fields watermill.LogFields) {
	if l.c.closing.Load() {
		l.drainedLogger.Error(msg, err, fields) // its quieting after the drain
		return
	}
	args := []any{"err", err}
	for k, v := range fields {
		args = append(args, k, v)
	}
	l.log.Warn(msg, args...)
}

func (l retryLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	args := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		args = append(args, k, v)
	}
	return retryLogger{drainedLogger{l.drainedLogger.LoggerAdapter.With(fields), l.c}, l.log.With(args...)}
}

// countingPublisher counts what it publishes successfully (the dead
// letters).
type countingPublisher struct {
	message.Publisher
	c *Consumer
}

func (p countingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	p.c.dead.Add(int64(len(msgs)))
	if p.c.counter != nil {
		p.c.counter.Add(context.Background(), int64(len(msgs)))
	}
	p.c.opts.Logger.Warn("projector dead-lettered messages", "topic", topic, "count", len(msgs))
	return nil
}
