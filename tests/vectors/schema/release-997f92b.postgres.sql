
SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

CREATE TABLE public.alert_events (
    id integer NOT NULL,
    dedup_key character varying(200) NOT NULL,
    fingerprint character varying(64) NOT NULL,
    received_at timestamp with time zone NOT NULL,
    source character varying(32) NOT NULL,
    alertname character varying(200) NOT NULL,
    status character varying(16) NOT NULL,
    node character varying(253),
    incident_id character varying(64),
    body json NOT NULL
);

CREATE SEQUENCE public.alert_events_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.alert_events_id_seq OWNED BY public.alert_events.id;

CREATE TABLE public.approval_prompts (
    id integer NOT NULL,
    incident_id character varying(64) NOT NULL,
    action_hash character varying(64) NOT NULL,
    step integer NOT NULL,
    status character varying(16) NOT NULL,
    channel character varying(64),
    ts character varying(32),
    asked_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    decision character varying(16),
    decided_by character varying(200),
    decided_at timestamp with time zone
);

CREATE SEQUENCE public.approval_prompts_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.approval_prompts_id_seq OWNED BY public.approval_prompts.id;

CREATE TABLE public.audit (
    id integer NOT NULL,
    at timestamp with time zone NOT NULL,
    phase character varying(16) NOT NULL,
    outcome character varying(16) NOT NULL,
    incident_id character varying(128) NOT NULL,
    step integer NOT NULL,
    tool character varying(64) NOT NULL,
    action_hash character varying(64) NOT NULL,
    idempotency_key character varying(64) NOT NULL,
    params json NOT NULL,
    verdict character varying(8) NOT NULL,
    approver character varying(128),
    dry_run_ok boolean,
    result json,
    error text,
    targets json
);

CREATE SEQUENCE public.audit_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.audit_id_seq OWNED BY public.audit.id;

CREATE TABLE public.billing_credits (
    id integer NOT NULL,
    customer character varying(128) NOT NULL,
    amount_usd numeric(12,2) NOT NULL,
    reason text NOT NULL,
    incident_id character varying(256) NOT NULL,
    step character varying(64) NOT NULL,
    idempotency_key character varying(64) NOT NULL,
    created_at timestamp without time zone NOT NULL
);

CREATE SEQUENCE public.billing_credits_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.billing_credits_id_seq OWNED BY public.billing_credits.id;

CREATE TABLE public.billing_customers (
    id character varying(128) NOT NULL,
    name character varying(256) NOT NULL,
    price_per_gpu_hour numeric(12,4) NOT NULL
);

CREATE TABLE public.billing_meter_cursors (
    meter character varying(256) NOT NULL,
    namespace character varying(253) NOT NULL,
    pod character varying(253) NOT NULL,
    reading numeric(18,3) NOT NULL,
    read_at timestamp without time zone NOT NULL
);

CREATE TABLE public.billing_metering_pauses (
    id integer NOT NULL,
    namespace character varying(253) NOT NULL,
    pod character varying(253) NOT NULL,
    paused_at timestamp without time zone NOT NULL,
    resumed_at timestamp without time zone,
    incident_id character varying(256) NOT NULL,
    reason text NOT NULL,
    idempotency_key character varying(64) NOT NULL,
    resume_key character varying(64)
);

CREATE SEQUENCE public.billing_metering_pauses_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.billing_metering_pauses_id_seq OWNED BY public.billing_metering_pauses.id;

CREATE TABLE public.billing_payout_holds (
    id integer NOT NULL,
    node character varying(253) NOT NULL,
    host_id character varying(256),
    held_at timestamp without time zone NOT NULL,
    released_at timestamp without time zone,
    incident_id character varying(256) NOT NULL,
    reason text NOT NULL,
    idempotency_key character varying(64) NOT NULL,
    release_key character varying(64)
);

CREATE SEQUENCE public.billing_payout_holds_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.billing_payout_holds_id_seq OWNED BY public.billing_payout_holds.id;

CREATE TABLE public.billing_usage (
    id integer NOT NULL,
    customer character varying(128) NOT NULL,
    namespace character varying(253) NOT NULL,
    pod character varying(253) NOT NULL,
    pod_uid character varying(64) NOT NULL,
    node character varying(253) NOT NULL,
    meter character varying(256) NOT NULL,
    window_start timestamp without time zone NOT NULL,
    window_end timestamp without time zone NOT NULL,
    gpu_seconds numeric(18,3) NOT NULL,
    billed boolean NOT NULL
);

CREATE SEQUENCE public.billing_usage_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.billing_usage_id_seq OWNED BY public.billing_usage.id;

CREATE TABLE public.incident_timeline (
    id integer NOT NULL,
    incident_id character varying(64) NOT NULL,
    seq integer NOT NULL,
    at timestamp with time zone NOT NULL,
    node character varying(32) NOT NULL,
    kind character varying(32) NOT NULL,
    text text NOT NULL,
    data json NOT NULL
);

CREATE SEQUENCE public.incident_timeline_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.incident_timeline_id_seq OWNED BY public.incident_timeline.id;

CREATE TABLE public.incidents (
    id character varying(64) NOT NULL,
    title character varying(500) NOT NULL,
    alertname character varying(200) NOT NULL,
    playbook_id character varying(100),
    severity character varying(32) NOT NULL,
    status character varying(16) NOT NULL,
    outcome character varying(16),
    root_cause character varying(200),
    escalation_reason text,
    opened_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    closed_at timestamp with time zone,
    human_owner character varying(200),
    summary json,
    component character varying(300),
    folded_into character varying(64)
);

CREATE TABLE public.intake_events (
    id integer NOT NULL,
    dedup_key character varying(120) NOT NULL,
    source character varying(32) NOT NULL,
    event_type character varying(64) NOT NULL,
    received_at timestamp with time zone NOT NULL,
    body bytea NOT NULL,
    status character varying(16) NOT NULL,
    note text,
    handled_at timestamp with time zone,
    attempts integer DEFAULT 0 NOT NULL,
    next_at double precision
);

CREATE SEQUENCE public.intake_events_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.intake_events_id_seq OWNED BY public.intake_events.id;

CREATE TABLE public.notify_outbox (
    id integer NOT NULL,
    at timestamp with time zone NOT NULL,
    incident_id character varying(128) NOT NULL,
    customer character varying(128) NOT NULL,
    subject character varying(200) NOT NULL,
    body text NOT NULL,
    idempotency_key character varying(64) NOT NULL
);

CREATE SEQUENCE public.notify_outbox_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.notify_outbox_id_seq OWNED BY public.notify_outbox.id;

CREATE TABLE public.service_jobs (
    id integer NOT NULL,
    key character varying(120) NOT NULL,
    kind character varying(32) NOT NULL,
    lane character varying(120) NOT NULL,
    incident_id character varying(64),
    payload text NOT NULL,
    status character varying(8) NOT NULL,
    attempts integer NOT NULL,
    next_at double precision NOT NULL,
    created_at double precision NOT NULL,
    first_failed_at double precision,
    last_error text,
    finished_at double precision
);

CREATE SEQUENCE public.service_jobs_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.service_jobs_id_seq OWNED BY public.service_jobs.id;

ALTER TABLE ONLY public.alert_events ALTER COLUMN id SET DEFAULT nextval('public.alert_events_id_seq'::regclass);

ALTER TABLE ONLY public.approval_prompts ALTER COLUMN id SET DEFAULT nextval('public.approval_prompts_id_seq'::regclass);

ALTER TABLE ONLY public.audit ALTER COLUMN id SET DEFAULT nextval('public.audit_id_seq'::regclass);

ALTER TABLE ONLY public.billing_credits ALTER COLUMN id SET DEFAULT nextval('public.billing_credits_id_seq'::regclass);

ALTER TABLE ONLY public.billing_metering_pauses ALTER COLUMN id SET DEFAULT nextval('public.billing_metering_pauses_id_seq'::regclass);

ALTER TABLE ONLY public.billing_payout_holds ALTER COLUMN id SET DEFAULT nextval('public.billing_payout_holds_id_seq'::regclass);

ALTER TABLE ONLY public.billing_usage ALTER COLUMN id SET DEFAULT nextval('public.billing_usage_id_seq'::regclass);

ALTER TABLE ONLY public.incident_timeline ALTER COLUMN id SET DEFAULT nextval('public.incident_timeline_id_seq'::regclass);

ALTER TABLE ONLY public.intake_events ALTER COLUMN id SET DEFAULT nextval('public.intake_events_id_seq'::regclass);

ALTER TABLE ONLY public.notify_outbox ALTER COLUMN id SET DEFAULT nextval('public.notify_outbox_id_seq'::regclass);

ALTER TABLE ONLY public.service_jobs ALTER COLUMN id SET DEFAULT nextval('public.service_jobs_id_seq'::regclass);

INSERT INTO public.alert_events VALUES
	(1, 'pagerduty:300828d379e33ebc:firing:2026-01-01T00:00:00+00:00', '300828d379e33ebc', '2026-01-01 00:30:00+00', 'pagerduty', 'GPUFallenOffBus', 'firing', 'east-h100-00000', 'pd-QR03P6KN9G6PXM', '{"alertname": "GPUFallenOffBus", "status": "firing", "labels": {"Hostname": "east-h100-00000", "UUID": "GPU-6cf7293f-9b91-5205-83ca-1fd37f6001dc", "cluster": "sandbox", "customer": "acme", "device": "nvidia1", "err_code": "79", "gpu": "1", "gpu_product": "NVIDIA-H100-80GB-HBM3", "gpu_uuid": "GPU-6cf7293f-9b91-5205-83ca-1fd37f6001dc", "modelName": "NVIDIA-H100-80GB-HBM3", "namespace": "tenant-acme", "node": "east-h100-00000", "pod": "train-dd2f-qgj6kr6h26-zsnd9", "pool": "east-h100", "rack": "east-h100-rack-000", "region": "us-east-1", "severity": "critical", "xid": "79"}, "annotations": {"summary": "GPU 1 of node east-h100-00000 has fallen off the bus", "description": "GPU 1 (GPU-6cf7293f-9b91-5205-83ca-1fd37f6001dc) on node east-h100-00000 raised XID 79 and is no longer reachable over PCIe; NVML reports it lost and the jobs on it have failed. Only a node reboot (or a reseat) brings it back: drain the node first.", "runbook_url": "http://runbooks.sandbox.local/alerts/gpufallenoffbus"}, "starts_at": "2026-01-01T00:00:00Z", "fingerprint": "300828d379e33ebc", "source": "pagerduty", "source_id": "QR03P6KN9G6PXM", "group_key": ""}');

INSERT INTO public.approval_prompts VALUES
	(1, 'pd-QR03P6KN9G6PXM', '0491d7a76b3dfb51620876fda1f6ccf6c8123d1f5a58685a0c2f0ea8abe30c97', 4, 'pending', NULL, NULL, '2026-01-01 00:30:00+00', '2026-01-01 00:45:00+00', NULL, NULL, NULL);

INSERT INTO public.audit VALUES
	(1, '2026-01-01 00:30:00+00', 'before', 'pending', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.acknowledge', '1e517626fa44f1a908023e9a7906a764f73d025566d46847305fa4a8be43e347', 'a18ad1e3e5b74cac6da0acf77b394f61f07d0791340f7328867e07c409fc6c5c', '{"incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, NULL, NULL, 'null'),
	(2, '2026-01-01 00:30:00+00', 'after', 'executed', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.acknowledge', '1e517626fa44f1a908023e9a7906a764f73d025566d46847305fa4a8be43e347', 'a18ad1e3e5b74cac6da0acf77b394f61f07d0791340f7328867e07c409fc6c5c', '{"incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, '{"service": "pagerduty", "target": "QR03P6KN9G6PXM", "channel": null, "ts": null}', NULL, 'null'),
	(3, '2026-01-01 00:30:00+00', 'before', 'pending', 'pd-QR03P6KN9G6PXM', 1, 'k8s.cordon_node', 'a55898a2ae20f0169eb6506c34de277ab1f7b6c24037a44a298286c155db4256', '7d3086b7eb811b07f8f38992ad09dfd894e6b9bda6d8762e5e235b2b14f23ed2', '{"node": "east-h100-00000"}', 'allow', NULL, NULL, NULL, NULL, '{"nodes": ["east-h100-00000"], "pods": [], "namespaces": [], "customers": [], "gpus": 8, "dollars": "0"}'),
	(4, '2026-01-01 00:30:00+00', 'after', 'executed', 'pd-QR03P6KN9G6PXM', 1, 'k8s.cordon_node', 'a55898a2ae20f0169eb6506c34de277ab1f7b6c24037a44a298286c155db4256', '7d3086b7eb811b07f8f38992ad09dfd894e6b9bda6d8762e5e235b2b14f23ed2', '{"node": "east-h100-00000"}', 'allow', NULL, true, '{"tool": "k8s.cordon_node", "target": "east-h100-00000", "dry_run": false, "changed": true, "detail": ""}', NULL, '{"nodes": ["east-h100-00000"], "pods": [], "namespaces": [], "customers": [], "gpus": 8, "dollars": "0"}'),
	(5, '2026-01-01 00:30:00+00', 'before', 'pending', 'pd-QR03P6KN9G6PXM', 2, 'notify.customer', 'f12ae02e7850cf103c8afac587ba9af87479a0e0b5ab1ab510d2ed02d11507b9', 'f982000d40de391f2806f73cc2acae985f5fe46c7f3d7ffc1952ccb628b8fd0a', '{"customer": "acme", "subject": "GPU fell off the bus (XID 79)", "body": "GPU 1 on east-h100-00000 failed (XID 79, fell off the bus); we are moving your work."}', 'allow', NULL, NULL, NULL, NULL, '{"nodes": [], "pods": [], "namespaces": [], "customers": ["acme"], "gpus": 0, "dollars": "0"}'),
	(6, '2026-01-01 00:30:00+00', 'after', 'executed', 'pd-QR03P6KN9G6PXM', 2, 'notify.customer', 'f12ae02e7850cf103c8afac587ba9af87479a0e0b5ab1ab510d2ed02d11507b9', 'f982000d40de391f2806f73cc2acae985f5fe46c7f3d7ffc1952ccb628b8fd0a', '{"customer": "acme", "subject": "GPU fell off the bus (XID 79)", "body": "GPU 1 on east-h100-00000 failed (XID 79, fell off the bus); we are moving your work."}', 'allow', NULL, NULL, '{"id": 1, "incident_id": "pd-QR03P6KN9G6PXM", "customer": "acme", "subject": "GPU fell off the bus (XID 79)", "body": "GPU 1 on east-h100-00000 failed (XID 79, fell off the bus); we are moving your work.", "created": true}', NULL, '{"nodes": [], "pods": [], "namespaces": [], "customers": ["acme"], "gpus": 0, "dollars": "0"}'),
	(7, '2026-01-01 00:30:00+00', 'before', 'pending', 'pd-QR03P6KN9G6PXM', 3, 'k8s.drain_node', 'eed32da2205d0046e2b441546c621ba233e8247f5809d05f788931078b6cf3fb', 'c83263b6e5d6cf3b33d1e101e99d32e48c0e7f6ccf2d5ae1eaf52c0b0d408971', '{"node": "east-h100-00000", "timeout_s": 900}', 'allow', NULL, NULL, NULL, NULL, '{"nodes": ["east-h100-00000"], "pods": ["tenant-acme/train-dd2f-qgj6kr6h26-9lk7g", "tenant-acme/train-dd2f-qgj6kr6h26-b7tw5", "tenant-acme/train-dd2f-qgj6kr6h26-c45lx", "tenant-acme/train-dd2f-qgj6kr6h26-d4jj9", "tenant-acme/train-dd2f-qgj6kr6h26-fsf2w", "tenant-acme/train-dd2f-qgj6kr6h26-q2vt4", "tenant-acme/train-dd2f-qgj6kr6h26-xb2gq", "tenant-acme/train-dd2f-qgj6kr6h26-zsnd9"], "namespaces": [], "customers": ["acme"], "gpus": 8, "dollars": "0"}'),
	(8, '2026-01-01 00:30:00+00', 'after', 'executed', 'pd-QR03P6KN9G6PXM', 3, 'k8s.drain_node', 'eed32da2205d0046e2b441546c621ba233e8247f5809d05f788931078b6cf3fb', 'c83263b6e5d6cf3b33d1e101e99d32e48c0e7f6ccf2d5ae1eaf52c0b0d408971', '{"node": "east-h100-00000", "timeout_s": 900}', 'allow', NULL, true, '{"node": "east-h100-00000", "dry_run": false, "evicted": ["tenant-acme/train-dd2f-qgj6kr6h26-9lk7g", "tenant-acme/train-dd2f-qgj6kr6h26-b7tw5", "tenant-acme/train-dd2f-qgj6kr6h26-c45lx", "tenant-acme/train-dd2f-qgj6kr6h26-d4jj9", "tenant-acme/train-dd2f-qgj6kr6h26-fsf2w", "tenant-acme/train-dd2f-qgj6kr6h26-q2vt4", "tenant-acme/train-dd2f-qgj6kr6h26-xb2gq", "tenant-acme/train-dd2f-qgj6kr6h26-zsnd9"], "blocked": [], "remaining": [], "skipped_daemonset": ["supply-agent-system/node-agent-dx2j7"], "completed": true, "elapsed_s": 0.083, "stopped_at_deadline": false, "notes": ["asked for 900 s; the executor allows 300 s: the drain stops at the executor''s deadline"]}', NULL, '{"nodes": ["east-h100-00000"], "pods": ["tenant-acme/train-dd2f-qgj6kr6h26-9lk7g", "tenant-acme/train-dd2f-qgj6kr6h26-b7tw5", "tenant-acme/train-dd2f-qgj6kr6h26-c45lx", "tenant-acme/train-dd2f-qgj6kr6h26-d4jj9", "tenant-acme/train-dd2f-qgj6kr6h26-fsf2w", "tenant-acme/train-dd2f-qgj6kr6h26-q2vt4", "tenant-acme/train-dd2f-qgj6kr6h26-xb2gq", "tenant-acme/train-dd2f-qgj6kr6h26-zsnd9"], "namespaces": [], "customers": ["acme"], "gpus": 8, "dollars": "0"}'),
	(9, '2026-01-01 00:30:00+00', 'before', 'pending', 'pd-QR03P6KN9G6PXM', 0, 'billing.ingest_meters', 'da6c9a2e44c057d8731369d3a80078f1dc30a74ad0f0342426c1e148b02bd8c9', 'pd-QR03P6KN9G6PXM:0:2026-01-01T00:30:00+00:00', '{"customer": "acme", "namespace": "tenant-acme"}', 'control', 'supply-agent', NULL, NULL, NULL, 'null'),
	(10, '2026-01-01 00:30:00+00', 'after', 'executed', 'pd-QR03P6KN9G6PXM', 0, 'billing.ingest_meters', 'da6c9a2e44c057d8731369d3a80078f1dc30a74ad0f0342426c1e148b02bd8c9', 'pd-QR03P6KN9G6PXM:0:2026-01-01T00:30:00+00:00', '{"customer": "acme", "namespace": "tenant-acme"}', 'control', 'supply-agent', NULL, '{"at": "2026-01-01T00:30:00Z", "meters": 30, "records": 22, "billed_gpu_seconds": "54000.000", "unbilled_gpu_seconds": "0.000", "already_ingested": [], "paused": [], "resets": [], "new_customers": ["acme"]}', NULL, 'null'),
	(11, '2026-01-01 00:30:00+00', 'before', 'pending', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', '6ee184f3ec73bd3d016b6cb0523d9b2cf86a6593d5f4aed4b82187190a5102fc', '5e899e1d96ba28fa8a013855a2ceb0315c015bf1305d3e197b2e01dfe65456d7', '{"content": "[evidence] k8s.get_node: east-h100-00000: Ready=True, GpuHealthy=False, unschedulable=False", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, NULL, NULL, 'null'),
	(12, '2026-01-01 00:30:00+00', 'after', 'executed', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', '6ee184f3ec73bd3d016b6cb0523d9b2cf86a6593d5f4aed4b82187190a5102fc', '5e899e1d96ba28fa8a013855a2ceb0315c015bf1305d3e197b2e01dfe65456d7', '{"content": "[evidence] k8s.get_node: east-h100-00000: Ready=True, GpuHealthy=False, unschedulable=False", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, '{"service": "pagerduty", "target": "QR03P6KN9G6PXM", "channel": null, "ts": null}', NULL, 'null'),
	(13, '2026-01-01 00:30:00+00', 'before', 'pending', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', '0aaaeda9665295317f58a78c337a846ef71e58e9fb83a62bf1717d30b940451c', '3e6d955c64973632f5457e5a31c52e7ea06b6a3ee9bf16a34f983d8472428f7b', '{"content": "[evidence] nvml.gpu_health: east-h100-00000: GPU1 XID 79", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, NULL, NULL, 'null'),
	(14, '2026-01-01 00:30:00+00', 'after', 'executed', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', '0aaaeda9665295317f58a78c337a846ef71e58e9fb83a62bf1717d30b940451c', '3e6d955c64973632f5457e5a31c52e7ea06b6a3ee9bf16a34f983d8472428f7b', '{"content": "[evidence] nvml.gpu_health: east-h100-00000: GPU1 XID 79", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, '{"service": "pagerduty", "target": "QR03P6KN9G6PXM", "channel": null, "ts": null}', NULL, 'null'),
	(15, '2026-01-01 00:30:00+00', 'before', 'pending', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', 'fdda7f290c81fede88374792a3537b991096ab10114df5ae730d8170ea0a47eb', '452d2ed29ebb194f277fa90d223804bd533ecb11df82b61f1c85cec64345f29e', '{"content": "[evidence] k8s.events_for: 1 events: GpuXidError", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, NULL, NULL, 'null'),
	(16, '2026-01-01 00:30:00+00', 'after', 'executed', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', 'fdda7f290c81fede88374792a3537b991096ab10114df5ae730d8170ea0a47eb', '452d2ed29ebb194f277fa90d223804bd533ecb11df82b61f1c85cec64345f29e', '{"content": "[evidence] k8s.events_for: 1 events: GpuXidError", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, '{"service": "pagerduty", "target": "QR03P6KN9G6PXM", "channel": null, "ts": null}', NULL, 'null'),
	(18, '2026-01-01 00:30:00+00', 'after', 'executed', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', 'cdd35b08950271c2ffb65343ce2fcd9f7afbedd4d7a24cf7519068d098d76f72', '4f9abaf1772b0800a9f04d6757e9126029704d3ec0c821e2a0896c07510249e1', '{"content": "[evidence] k8s.get_pod: tenant-acme/train-dd2f-qgj6kr6h26-zsnd9: Running, ready=True, restarts=1 Error", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, '{"service": "pagerduty", "target": "QR03P6KN9G6PXM", "channel": null, "ts": null}', NULL, 'null'),
	(20, '2026-01-01 00:30:00+00', 'after', 'executed', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', 'dd870e4ebd6b21441823c933132de3ecc9c2b7e89429f2ed280e216345ade530', 'aa7394a13cc13aade991fc22fdec19a176564d6a8d02c6435fe1b77e1bb60b1a', '{"content": "[evidence] k8s.events_for: 0 events: -", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, '{"service": "pagerduty", "target": "QR03P6KN9G6PXM", "channel": null, "ts": null}', NULL, 'null'),
	(22, '2026-01-01 00:30:00+00', 'after', 'executed', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', '1b2004d1a7a7fe3b90436773771e90a3b28d49780486108ede5936b4b3279bfe', '19d92eb13ade6ef44b3234999d90f59bf577d7060e8e727a24ee8e6dd52a7e74', '{"content": "[evidence] k8s.list_pods_on_node: 9 pods (8 tenant)", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, '{"service": "pagerduty", "target": "QR03P6KN9G6PXM", "channel": null, "ts": null}', NULL, 'null'),
	(24, '2026-01-01 00:30:00+00', 'after', 'executed', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', '80f4cf5cd7ca226c1006d298687744a1a911470514be512c5fef47e681e5d5c4', 'd9574068bad6310139c3ebb6e58fc8b5fa53be2d5e38b1a91b1e0085678e3829', '{"content": "[action] executed k8s.cordon_node east-h100-00000: changed", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, '{"service": "pagerduty", "target": "QR03P6KN9G6PXM", "channel": null, "ts": null}', NULL, 'null'),
	(17, '2026-01-01 00:30:00+00', 'before', 'pending', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', 'cdd35b08950271c2ffb65343ce2fcd9f7afbedd4d7a24cf7519068d098d76f72', '4f9abaf1772b0800a9f04d6757e9126029704d3ec0c821e2a0896c07510249e1', '{"content": "[evidence] k8s.get_pod: tenant-acme/train-dd2f-qgj6kr6h26-zsnd9: Running, ready=True, restarts=1 Error", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, NULL, NULL, 'null'),
	(19, '2026-01-01 00:30:00+00', 'before', 'pending', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', 'dd870e4ebd6b21441823c933132de3ecc9c2b7e89429f2ed280e216345ade530', 'aa7394a13cc13aade991fc22fdec19a176564d6a8d02c6435fe1b77e1bb60b1a', '{"content": "[evidence] k8s.events_for: 0 events: -", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, NULL, NULL, 'null'),
	(21, '2026-01-01 00:30:00+00', 'before', 'pending', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', '1b2004d1a7a7fe3b90436773771e90a3b28d49780486108ede5936b4b3279bfe', '19d92eb13ade6ef44b3234999d90f59bf577d7060e8e727a24ee8e6dd52a7e74', '{"content": "[evidence] k8s.list_pods_on_node: 9 pods (8 tenant)", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, NULL, NULL, 'null'),
	(23, '2026-01-01 00:30:00+00', 'before', 'pending', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', '80f4cf5cd7ca226c1006d298687744a1a911470514be512c5fef47e681e5d5c4', 'd9574068bad6310139c3ebb6e58fc8b5fa53be2d5e38b1a91b1e0085678e3829', '{"content": "[action] executed k8s.cordon_node east-h100-00000: changed", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, NULL, NULL, 'null'),
	(25, '2026-01-01 00:30:00+00', 'before', 'pending', 'pd-QR03P6KN9G6PXM', 0, 'pagerduty.note', 'c5683fad0a204f22c8e25ff28f1b5fef3f51989e35fb2610283700c1ae6fef6d', '1f7cdaadf13a758553dcdd424198b7f4fdc34e338359d3234052437918684160', '{"content": "[action] executed notify.customer acme", "incident": "QR03P6KN9G6PXM"}', 'control', 'supply-agent', NULL, NULL, NULL, 'null');

INSERT INTO public.billing_customers VALUES
	('acme', 'acme', 2.5000);

INSERT INTO public.billing_meter_cursors VALUES
	('m-d786e466-d6d0-46d0-b75d-e6f250bc3228', 'tenant-acme', 'train-dd2f-qgj6kr6h26-q2vt4', 1800.000, '2026-01-01 00:30:00'),
	('m-9b88b1e5-df71-4994-8733-1d97080f73bb', 'tenant-acme', 'train-dd2f-qgj6kr6h26-zsnd9', 1800.000, '2026-01-01 00:30:00'),
	('m-caa0a141-a637-418a-8f1c-9ce25aadd0d2', 'tenant-acme', 'train-dd2f-qgj6kr6h26-c45lx', 1800.000, '2026-01-01 00:30:00'),
	('m-c4eb26e0-0654-49e4-b09e-7f98746fe5b9', 'tenant-acme', 'train-dd2f-qgj6kr6h26-xb2gq', 1800.000, '2026-01-01 00:30:00'),
	('m-a111f5fb-fbe8-4036-8c04-6d96cbfe2f8d', 'tenant-acme', 'train-dd2f-qgj6kr6h26-9lk7g', 1800.000, '2026-01-01 00:30:00'),
	('m-5e6203e3-ceb0-471e-a3d1-863ba7b0e693', 'tenant-acme', 'train-dd2f-qgj6kr6h26-fsf2w', 1800.000, '2026-01-01 00:30:00'),
	('m-b6d75031-2dbe-4f3d-818b-fbb079a2ed17', 'tenant-acme', 'train-dd2f-qgj6kr6h26-d4jj9', 1800.000, '2026-01-01 00:30:00'),
	('m-45b90d8c-39f9-4f81-add9-6b620942c3fb', 'tenant-acme', 'train-dd2f-qgj6kr6h26-b7tw5', 1800.000, '2026-01-01 00:30:00'),
	('m-c196c5c2-ff2e-4c17-9d4c-712e801b43bf', 'tenant-acme', 'train-dd2f-qgj6kr6h26-7pw5v', 1800.000, '2026-01-01 00:30:00'),
	('m-e484a550-eebf-4fce-a915-5cca16535f4c', 'tenant-acme', 'train-dd2f-qgj6kr6h26-hq85k', 1800.000, '2026-01-01 00:30:00'),
	('m-1d417ead-8930-4bcd-a93c-c50d3372969f', 'tenant-acme', 'eval-bk5f-527gdhl9fh-wvlxt', 1800.000, '2026-01-01 00:30:00'),
	('m-8419bd91-0b40-4faf-b82a-ead189cf6d5a', 'tenant-acme', 'eval-bk5f-527gdhl9fh-vbzqb', 1800.000, '2026-01-01 00:30:00'),
	('m-be934924-1dc4-4276-a94a-e4a7478e5850', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-xn87l', 3600.000, '2026-01-01 00:30:00'),
	('m-e13d4b11-5475-4733-a583-fa5d221a61a1', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-67h9q', 3600.000, '2026-01-01 00:30:00'),
	('m-34f2bae5-67de-4005-ae7a-07f2c3e60e90', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-w5p7r', 3600.000, '2026-01-01 00:30:00'),
	('m-02b653e4-19d2-4b97-b805-ec944d3b8462', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-6hd8n', 3600.000, '2026-01-01 00:30:00'),
	('m-aa851bb4-f61f-4913-b1d6-43e645e1b952', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-p2zck', 3600.000, '2026-01-01 00:30:00'),
	('m-13ab6410-8877-48e7-ae95-050791cfb3fa', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-mnj4q', 3600.000, '2026-01-01 00:30:00'),
	('m-6537437f-c301-4f9f-9e9e-ca4fb3852a64', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-qvt2j', 3600.000, '2026-01-01 00:30:00'),
	('m-7192d0d7-41b2-4b99-bcae-11a6bd21a956', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-xbfzf', 3600.000, '2026-01-01 00:30:00'),
	('m-c17b558b-128e-43f5-873d-e8558aa97466', 'tenant-acme', 'train-5dl9-nvxn2k49dk-bzcfk', 1800.000, '2026-01-01 00:30:00'),
	('m-7be80c9d-5f88-45d0-bb42-efaca1901fe2', 'tenant-acme', 'train-5dl9-nvxn2k49dk-d4hwk', 1800.000, '2026-01-01 00:30:00'),
	('m-5e7381ce-2693-4cac-8f54-18e963df45ca', 'tenant-acme', 'train-dd2f-qgj6kr6h26-jsr6l', 0.000, '2026-01-01 00:30:00'),
	('m-2f11ee8c-ebbb-4073-937f-05b6bf00b8ae', 'tenant-acme', 'train-dd2f-qgj6kr6h26-znmw7', 0.000, '2026-01-01 00:30:00'),
	('m-916658f5-9070-4ac6-ae96-cb4c1540e467', 'tenant-acme', 'train-dd2f-qgj6kr6h26-fsndw', 0.000, '2026-01-01 00:30:00'),
	('m-a97f45cd-e922-45bc-b698-3b204f65b718', 'tenant-acme', 'train-dd2f-qgj6kr6h26-m97bd', 0.000, '2026-01-01 00:30:00'),
	('m-38002d3a-2496-4847-a1b7-cc2e486d2107', 'tenant-acme', 'train-dd2f-qgj6kr6h26-t675n', 0.000, '2026-01-01 00:30:00'),
	('m-e703013f-eb26-46c4-9842-bdd191bbfa2b', 'tenant-acme', 'train-dd2f-qgj6kr6h26-pfn5s', 0.000, '2026-01-01 00:30:00'),
	('m-f7bfc49b-664b-4437-b8a1-7111514f7eb0', 'tenant-acme', 'train-dd2f-qgj6kr6h26-sv8ms', 0.000, '2026-01-01 00:30:00'),
	('m-6546ab8a-ad50-4d03-9d02-0032062c8cac', 'tenant-acme', 'train-dd2f-qgj6kr6h26-kdp9p', 0.000, '2026-01-01 00:30:00');

INSERT INTO public.billing_usage VALUES
	(1, 'acme', 'tenant-acme', 'train-dd2f-qgj6kr6h26-q2vt4', 'd786e466-d6d0-46d0-b75d-e6f250bc3228', 'east-h100-00000', 'm-d786e466-d6d0-46d0-b75d-e6f250bc3228', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true),
	(2, 'acme', 'tenant-acme', 'train-dd2f-qgj6kr6h26-zsnd9', '9b88b1e5-df71-4994-8733-1d97080f73bb', 'east-h100-00000', 'm-9b88b1e5-df71-4994-8733-1d97080f73bb', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true),
	(3, 'acme', 'tenant-acme', 'train-dd2f-qgj6kr6h26-c45lx', 'caa0a141-a637-418a-8f1c-9ce25aadd0d2', 'east-h100-00000', 'm-caa0a141-a637-418a-8f1c-9ce25aadd0d2', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true),
	(4, 'acme', 'tenant-acme', 'train-dd2f-qgj6kr6h26-xb2gq', 'c4eb26e0-0654-49e4-b09e-7f98746fe5b9', 'east-h100-00000', 'm-c4eb26e0-0654-49e4-b09e-7f98746fe5b9', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true),
	(5, 'acme', 'tenant-acme', 'train-dd2f-qgj6kr6h26-9lk7g', 'a111f5fb-fbe8-4036-8c04-6d96cbfe2f8d', 'east-h100-00000', 'm-a111f5fb-fbe8-4036-8c04-6d96cbfe2f8d', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true),
	(6, 'acme', 'tenant-acme', 'train-dd2f-qgj6kr6h26-fsf2w', '5e6203e3-ceb0-471e-a3d1-863ba7b0e693', 'east-h100-00000', 'm-5e6203e3-ceb0-471e-a3d1-863ba7b0e693', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true),
	(7, 'acme', 'tenant-acme', 'train-dd2f-qgj6kr6h26-d4jj9', 'b6d75031-2dbe-4f3d-818b-fbb079a2ed17', 'east-h100-00000', 'm-b6d75031-2dbe-4f3d-818b-fbb079a2ed17', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true),
	(8, 'acme', 'tenant-acme', 'train-dd2f-qgj6kr6h26-b7tw5', '45b90d8c-39f9-4f81-add9-6b620942c3fb', 'east-h100-00000', 'm-45b90d8c-39f9-4f81-add9-6b620942c3fb', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true),
	(9, 'acme', 'tenant-acme', 'train-dd2f-qgj6kr6h26-7pw5v', 'c196c5c2-ff2e-4c17-9d4c-712e801b43bf', 'east-h100-00001', 'm-c196c5c2-ff2e-4c17-9d4c-712e801b43bf', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true),
	(10, 'acme', 'tenant-acme', 'train-dd2f-qgj6kr6h26-hq85k', 'e484a550-eebf-4fce-a915-5cca16535f4c', 'east-h100-00001', 'm-e484a550-eebf-4fce-a915-5cca16535f4c', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true),
	(11, 'acme', 'tenant-acme', 'eval-bk5f-527gdhl9fh-wvlxt', '1d417ead-8930-4bcd-a93c-c50d3372969f', 'west-a100-00000', 'm-1d417ead-8930-4bcd-a93c-c50d3372969f', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true),
	(12, 'acme', 'tenant-acme', 'eval-bk5f-527gdhl9fh-vbzqb', '8419bd91-0b40-4faf-b82a-ead189cf6d5a', 'west-a100-00000', 'm-8419bd91-0b40-4faf-b82a-ead189cf6d5a', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true),
	(13, 'acme', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-xn87l', 'be934924-1dc4-4276-a94a-e4a7478e5850', 'west-a100-00002', 'm-be934924-1dc4-4276-a94a-e4a7478e5850', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 3600.000, true),
	(14, 'acme', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-67h9q', 'e13d4b11-5475-4733-a583-fa5d221a61a1', 'west-a100-00003', 'm-e13d4b11-5475-4733-a583-fa5d221a61a1', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 3600.000, true),
	(15, 'acme', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-w5p7r', '34f2bae5-67de-4005-ae7a-07f2c3e60e90', 'west-a100-00003', 'm-34f2bae5-67de-4005-ae7a-07f2c3e60e90', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 3600.000, true),
	(16, 'acme', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-6hd8n', '02b653e4-19d2-4b97-b805-ec944d3b8462', 'west-a100-00003', 'm-02b653e4-19d2-4b97-b805-ec944d3b8462', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 3600.000, true),
	(17, 'acme', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-p2zck', 'aa851bb4-f61f-4913-b1d6-43e645e1b952', 'west-a100-00003', 'm-aa851bb4-f61f-4913-b1d6-43e645e1b952', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 3600.000, true),
	(18, 'acme', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-mnj4q', '13ab6410-8877-48e7-ae95-050791cfb3fa', 'west-a100-00004', 'm-13ab6410-8877-48e7-ae95-050791cfb3fa', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 3600.000, true),
	(19, 'acme', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-qvt2j', '6537437f-c301-4f9f-9e9e-ca4fb3852a64', 'west-a100-00004', 'm-6537437f-c301-4f9f-9e9e-ca4fb3852a64', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 3600.000, true),
	(20, 'acme', 'tenant-acme', 'eval-knq4-4zmm8ll2s9-xbfzf', '7192d0d7-41b2-4b99-bcae-11a6bd21a956', 'west-a100-00004', 'm-7192d0d7-41b2-4b99-bcae-11a6bd21a956', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 3600.000, true),
	(21, 'acme', 'tenant-acme', 'train-5dl9-nvxn2k49dk-bzcfk', 'c17b558b-128e-43f5-873d-e8558aa97466', 'west-a100-00006', 'm-c17b558b-128e-43f5-873d-e8558aa97466', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true),
	(22, 'acme', 'tenant-acme', 'train-5dl9-nvxn2k49dk-d4hwk', '7be80c9d-5f88-45d0-bb42-efaca1901fe2', 'west-a100-00006', 'm-7be80c9d-5f88-45d0-bb42-efaca1901fe2', '2026-01-01 00:00:00', '2026-01-01 00:30:00', 1800.000, true);

INSERT INTO public.incident_timeline VALUES
	(1, 'pd-QR03P6KN9G6PXM', 0, '2026-01-01 00:30:00+00', 'triage', 'triage', 'GPUFallenOffBus on 1 node(s): east-h100-00000: playbook xid-fallen-off-bus (GPU fell off the bus (XID 79)), severity critical', '{"playbook": "xid-fallen-off-bus"}'),
	(2, 'pd-QR03P6KN9G6PXM', 1, '2026-01-01 00:30:00+00', 'investigate', 'evidence', 'k8s.get_node: east-h100-00000: Ready=True, GpuHealthy=False, unschedulable=False', '{}'),
	(3, 'pd-QR03P6KN9G6PXM', 2, '2026-01-01 00:30:00+00', 'investigate', 'evidence', 'nvml.gpu_health: east-h100-00000: GPU1 XID 79', '{}'),
	(4, 'pd-QR03P6KN9G6PXM', 3, '2026-01-01 00:30:00+00', 'investigate', 'evidence', 'k8s.events_for: 1 events: GpuXidError', '{}'),
	(5, 'pd-QR03P6KN9G6PXM', 4, '2026-01-01 00:30:00+00', 'investigate', 'evidence', 'k8s.get_pod: tenant-acme/train-dd2f-qgj6kr6h26-zsnd9: Running, ready=True, restarts=1 Error', '{}'),
	(6, 'pd-QR03P6KN9G6PXM', 5, '2026-01-01 00:30:00+00', 'investigate', 'evidence', 'k8s.events_for: 0 events: -', '{}'),
	(7, 'pd-QR03P6KN9G6PXM', 6, '2026-01-01 00:30:00+00', 'plan', 'proposal', '[runbook] nvml.gpu_health east-h100-00000: GPU fell off the bus (XID 79): runbook step read-gpu-health', '{"planner": "runbook", "tool": "nvml.gpu_health", "params": {"node": "east-h100-00000"}}'),
	(8, 'pd-QR03P6KN9G6PXM', 7, '2026-01-01 00:30:00+00', 'read', 'evidence', 'nvml.gpu_health: east-h100-00000: GPU1 XID 79', '{"planner": "runbook"}'),
	(9, 'pd-QR03P6KN9G6PXM', 8, '2026-01-01 00:30:00+00', 'plan', 'proposal', '[runbook] k8s.list_pods_on_node east-h100-00000: GPU fell off the bus (XID 79): runbook step list-pods', '{"planner": "runbook", "tool": "k8s.list_pods_on_node", "params": {"node": "east-h100-00000"}}'),
	(10, 'pd-QR03P6KN9G6PXM', 9, '2026-01-01 00:30:00+00', 'read', 'evidence', 'k8s.list_pods_on_node: 9 pods (8 tenant)', '{"planner": "runbook"}'),
	(11, 'pd-QR03P6KN9G6PXM', 10, '2026-01-01 00:30:00+00', 'plan', 'proposal', '[runbook] k8s.cordon_node east-h100-00000: GPU fell off the bus (XID 79): runbook step cordon', '{"planner": "runbook", "tool": "k8s.cordon_node", "params": {"node": "east-h100-00000"}}'),
	(12, 'pd-QR03P6KN9G6PXM', 11, '2026-01-01 00:30:00+00', 'gate', 'decision', 'ALLOW k8s.cordon_node east-h100-00000: within every limit consulted', '{"verdict": "allow", "reasons": ["within every limit consulted"], "step": 1}'),
	(13, 'pd-QR03P6KN9G6PXM', 12, '2026-01-01 00:30:00+00', 'execute', 'action', 'executed k8s.cordon_node east-h100-00000: changed', '{"outcome": "executed", "step": 1}'),
	(14, 'pd-QR03P6KN9G6PXM', 13, '2026-01-01 00:30:00+00', 'verify', 'verify', 'verified k8s.cordon_node: east-h100-00000 unschedulable=True', '{"verified": true}'),
	(15, 'pd-QR03P6KN9G6PXM', 14, '2026-01-01 00:30:00+00', 'plan', 'proposal', '[runbook] notify.customer acme: GPU fell off the bus (XID 79): runbook step notify-customer', '{"planner": "runbook", "tool": "notify.customer", "params": {"customer": "acme", "subject": "GPU fell off the bus (XID 79)", "body": "GPU 1 on east-h100-00000 failed (XID 79, fell off the bus); we are moving your work."}}'),
	(16, 'pd-QR03P6KN9G6PXM', 15, '2026-01-01 00:30:00+00', 'gate', 'decision', 'ALLOW notify.customer acme: within every limit consulted', '{"verdict": "allow", "reasons": ["within every limit consulted"], "step": 2}'),
	(17, 'pd-QR03P6KN9G6PXM', 16, '2026-01-01 00:30:00+00', 'execute', 'action', 'executed notify.customer acme', '{"outcome": "executed", "step": 2}'),
	(18, 'pd-QR03P6KN9G6PXM', 17, '2026-01-01 00:30:00+00', 'verify', 'verify', 'verified notify.customer: 1 notice(s) to acme', '{"verified": true}'),
	(19, 'pd-QR03P6KN9G6PXM', 18, '2026-01-01 00:30:00+00', 'plan', 'proposal', '[runbook] k8s.drain_node east-h100-00000: GPU fell off the bus (XID 79): runbook step drain', '{"planner": "runbook", "tool": "k8s.drain_node", "params": {"node": "east-h100-00000", "timeout_s": 900}}'),
	(20, 'pd-QR03P6KN9G6PXM', 19, '2026-01-01 00:30:00+00', 'gate', 'decision', 'ALLOW k8s.drain_node east-h100-00000: within every limit consulted', '{"verdict": "allow", "reasons": ["within every limit consulted"], "step": 3}'),
	(21, 'pd-QR03P6KN9G6PXM', 20, '2026-01-01 00:30:00+00', 'execute', 'action', 'executed k8s.drain_node east-h100-00000: evicted 8, blocked 0, remaining 0', '{"outcome": "executed", "step": 3}'),
	(22, 'pd-QR03P6KN9G6PXM', 21, '2026-01-01 00:30:00+00', 'verify', 'verify', 'verified k8s.drain_node: 0 pods left on east-h100-00000 (at most 0)', '{"verified": true}'),
	(23, 'pd-QR03P6KN9G6PXM', 22, '2026-01-01 00:30:00+00', 'plan', 'proposal', '[runbook] billing.usage tenant-acme/train-dd2f-qgj6kr6h26-zsnd9: What the customer was billed for the broken GPU''s pod since the fault began; that is the credit.', '{"planner": "runbook", "tool": "billing.usage", "params": {"customer": "acme", "namespace": "tenant-acme", "pod": "train-dd2f-qgj6kr6h26-zsnd9", "start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T00:30:00+00:00"}}'),
	(24, 'pd-QR03P6KN9G6PXM', 23, '2026-01-01 00:30:00+00', 'read', 'evidence', 'billing.usage: 1800.000 GPU-s billed, $1.25', '{"planner": "runbook"}'),
	(25, 'pd-QR03P6KN9G6PXM', 24, '2026-01-01 00:30:00+00', 'plan', 'proposal', '[runbook] billing.issue_credit acme/1.25: Credit the GPU time billed on a GPU that was already dead; money out asks a human.', '{"planner": "runbook", "tool": "billing.issue_credit", "params": {"customer": "acme", "amount_usd": "1.25", "reason": "GPU time billed on east-h100-00000 GPU 1 after it fell off the bus (XID 79)"}}'),
	(26, 'pd-QR03P6KN9G6PXM', 25, '2026-01-01 00:30:00+00', 'gate', 'decision', 'ASK billing.issue_credit acme/1.25: ask: playbook xid-fallen-off-bus asks a human to approve billing.issue_credit', '{"verdict": "ask", "reasons": ["ask: playbook xid-fallen-off-bus asks a human to approve billing.issue_credit"], "step": 4}');

INSERT INTO public.incidents VALUES
	('pd-QR03P6KN9G6PXM', 'GPU 1 of node east-h100-00000 has fallen off the bus', 'GPUFallenOffBus', 'xid-fallen-off-bus', 'critical', 'paused', NULL, 'xid-fallen-off-bus', NULL, '2026-01-01 00:30:00+00', '2026-01-01 00:30:00+00', NULL, NULL, NULL, NULL, NULL);

INSERT INTO public.intake_events VALUES
	(1, 'pd:ZPBQ4CB3VN2DXDS69NZ354Y6HG', 'pagerduty', 'incident.triggered', '2026-12-03 13:43:03.414164+00', '\x7b226576656e74223a207b226964223a20225a50425134434233564e324458445336394e5a33353459364847222c20226576656e745f74797065223a2022696e636964656e742e747269676765726564222c20227265736f757263655f74797065223a2022696e636964656e74222c20226f636375727265645f6174223a2022323032362d30312d30315430303a30303a30305a222c20226167656e74223a206e756c6c2c2022636c69656e74223a206e756c6c2c202264617461223a207b226964223a20225152303350364b4e39473650584d222c202274797065223a2022696e636964656e74222c202273656c66223a202268747470733a2f2f6170692e7061676572647574792e636f6d2f696e636964656e74732f5152303350364b4e39473650584d222c202268746d6c5f75726c223a202268747470733a2f2f73616e64626f782e7061676572647574792e636f6d2f696e636964656e74732f5152303350364b4e39473650584d222c20226e756d626572223a203337323534312c2022737461747573223a2022747269676765726564222c2022696e636964656e745f6b6579223a202233303038323864333739653333656263222c2022637265617465645f6174223a2022323032362d30312d30315430303a30303a30305a222c20227469746c65223a20224750552031206f66206e6f646520656173742d683130302d3030303030206861732066616c6c656e206f66662074686520627573222c202273657276696365223a207b226964223a20225053414e444258222c202274797065223a2022736572766963655f7265666572656e6365222c202273756d6d617279223a202247505520666c656574202873616e64626f7829222c202273656c66223a202268747470733a2f2f6170692e7061676572647574792e636f6d2f73657276696365732f5053414e444258222c202268746d6c5f75726c223a202268747470733a2f2f73616e64626f782e7061676572647574792e636f6d2f73657276696365732f5053414e444258227d2c202261737369676e656573223a205b5d2c2022657363616c6174696f6e5f706f6c696379223a207b226964223a202250455343534258222c202274797065223a2022657363616c6174696f6e5f706f6c6963795f7265666572656e6365222c202273756d6d617279223a202247505520666c656574206f6e2d63616c6c222c202273656c66223a202268747470733a2f2f6170692e7061676572647574792e636f6d2f657363616c6174696f6e5f706f6c69636965732f50455343534258222c202268746d6c5f75726c223a202268747470733a2f2f73616e64626f782e7061676572647574792e636f6d2f657363616c6174696f6e5f706f6c69636965732f50455343534258227d2c20227465616d73223a205b5d2c20227072696f72697479223a206e756c6c2c2022757267656e6379223a202268696768222c2022636f6e666572656e63655f627269646765223a206e756c6c2c20227265736f6c76655f726561736f6e223a206e756c6c7d7d7d', 'handled', 'opened pd-QR03P6KN9G6PXM', '2026-12-03 13:43:03.457524+00', 0, NULL);

INSERT INTO public.notify_outbox VALUES
	(1, '2026-12-03 13:43:03.953299+00', 'pd-QR03P6KN9G6PXM', 'acme', 'GPU fell off the bus (XID 79)', 'GPU 1 on east-h100-00000 failed (XID 79, fell off the bus); we are moving your work.', 'f982000d40de391f2806f73cc2acae985f5fe46c7f3d7ffc1952ccb628b8fd0a');

INSERT INTO public.service_jobs VALUES
	(1, 'a18ad1e3e5b74cac6da0acf77b394f61f07d0791340f7328867e07c409fc6c5c', 'send', 'pagerduty:pd-QR03P6KN9G6PXM', 'pd-QR03P6KN9G6PXM', '{"key": "a18ad1e3e5b74cac6da0acf77b394f61f07d0791340f7328867e07c409fc6c5c", "params": {"incident": "QR03P6KN9G6PXM"}, "tool": "pagerduty.acknowledge"}', 'done', 0, 1796305383.450632, 1796305383.450632, NULL, NULL, 1796305383.7670019),
	(13, '5af9c508d0b63273c933a7e85ba8e5a48516a2f43a6844e1be66aac2cac389b6', 'send', 'pagerduty:pd-QR03P6KN9G6PXM', 'pd-QR03P6KN9G6PXM', '{"key": "5af9c508d0b63273c933a7e85ba8e5a48516a2f43a6844e1be66aac2cac389b6", "params": {"content": "[action] executed k8s.drain_node east-h100-00000: evicted 8, blocked 0, remaining 0", "incident": "QR03P6KN9G6PXM"}, "tool": "pagerduty.note"}', 'queued', 0, 1796305384.3794577, 1796305384.3794577, NULL, NULL, NULL),
	(14, 'e6faaf81cac0a8f5375ac02211af1c3bd02f8f4d96f3768bc728c5ec0af5a2de', 'send', 'pagerduty:pd-QR03P6KN9G6PXM', 'pd-QR03P6KN9G6PXM', '{"key": "e6faaf81cac0a8f5375ac02211af1c3bd02f8f4d96f3768bc728c5ec0af5a2de", "params": {"content": "[evidence] billing.usage: 1800.000 GPU-s billed, $1.25", "incident": "QR03P6KN9G6PXM"}, "tool": "pagerduty.note"}', 'queued', 0, 1796305384.3826942, 1796305384.3826942, NULL, NULL, NULL),
	(4, '5e899e1d96ba28fa8a013855a2ceb0315c015bf1305d3e197b2e01dfe65456d7', 'send', 'pagerduty:pd-QR03P6KN9G6PXM', 'pd-QR03P6KN9G6PXM', '{"key": "5e899e1d96ba28fa8a013855a2ceb0315c015bf1305d3e197b2e01dfe65456d7", "params": {"content": "[evidence] k8s.get_node: east-h100-00000: Ready=True, GpuHealthy=False, unschedulable=False", "incident": "QR03P6KN9G6PXM"}, "tool": "pagerduty.note"}', 'done', 0, 1796305384.350135, 1796305384.350135, NULL, NULL, 1796305384.3877473),
	(2, 'run:pd-QR03P6KN9G6PXM:1796305383456110094:139697703614144', 'run', 'run:pd-QR03P6KN9G6PXM', 'pd-QR03P6KN9G6PXM', '{}', 'done', 0, 1796305383.4561226, 1796305383.4561226, NULL, NULL, 1796305384.406162),
	(5, '3e6d955c64973632f5457e5a31c52e7ea06b6a3ee9bf16a34f983d8472428f7b', 'send', 'pagerduty:pd-QR03P6KN9G6PXM', 'pd-QR03P6KN9G6PXM', '{"key": "3e6d955c64973632f5457e5a31c52e7ea06b6a3ee9bf16a34f983d8472428f7b", "params": {"content": "[evidence] nvml.gpu_health: east-h100-00000: GPU1 XID 79", "incident": "QR03P6KN9G6PXM"}, "tool": "pagerduty.note"}', 'done', 0, 1796305384.3521671, 1796305384.3521671, NULL, NULL, 1796305384.4521163),
	(6, '452d2ed29ebb194f277fa90d223804bd533ecb11df82b61f1c85cec64345f29e', 'send', 'pagerduty:pd-QR03P6KN9G6PXM', 'pd-QR03P6KN9G6PXM', '{"key": "452d2ed29ebb194f277fa90d223804bd533ecb11df82b61f1c85cec64345f29e", "params": {"content": "[evidence] k8s.events_for: 1 events: GpuXidError", "incident": "QR03P6KN9G6PXM"}, "tool": "pagerduty.note"}', 'done', 0, 1796305384.3545454, 1796305384.3545454, NULL, NULL, 1796305384.4798853),
	(7, '4f9abaf1772b0800a9f04d6757e9126029704d3ec0c821e2a0896c07510249e1', 'send', 'pagerduty:pd-QR03P6KN9G6PXM', 'pd-QR03P6KN9G6PXM', '{"key": "4f9abaf1772b0800a9f04d6757e9126029704d3ec0c821e2a0896c07510249e1", "params": {"content": "[evidence] k8s.get_pod: tenant-acme/train-dd2f-qgj6kr6h26-zsnd9: Running, ready=True, restarts=1 Error", "incident": "QR03P6KN9G6PXM"}, "tool": "pagerduty.note"}', 'done', 0, 1796305384.3585691, 1796305384.3585691, NULL, NULL, 1796305384.4958794),
	(8, 'aa7394a13cc13aade991fc22fdec19a176564d6a8d02c6435fe1b77e1bb60b1a', 'send', 'pagerduty:pd-QR03P6KN9G6PXM', 'pd-QR03P6KN9G6PXM', '{"key": "aa7394a13cc13aade991fc22fdec19a176564d6a8d02c6435fe1b77e1bb60b1a", "params": {"content": "[evidence] k8s.events_for: 0 events: -", "incident": "QR03P6KN9G6PXM"}, "tool": "pagerduty.note"}', 'done', 0, 1796305384.3632448, 1796305384.3632448, NULL, NULL, 1796305384.5370615),
	(10, '19d92eb13ade6ef44b3234999d90f59bf577d7060e8e727a24ee8e6dd52a7e74', 'send', 'pagerduty:pd-QR03P6KN9G6PXM', 'pd-QR03P6KN9G6PXM', '{"key": "19d92eb13ade6ef44b3234999d90f59bf577d7060e8e727a24ee8e6dd52a7e74", "params": {"content": "[evidence] k8s.list_pods_on_node: 9 pods (8 tenant)", "incident": "QR03P6KN9G6PXM"}, "tool": "pagerduty.note"}', 'done', 0, 1796305384.3697243, 1796305384.3697243, NULL, NULL, 1796305384.5522966),
	(11, 'd9574068bad6310139c3ebb6e58fc8b5fa53be2d5e38b1a91b1e0085678e3829', 'send', 'pagerduty:pd-QR03P6KN9G6PXM', 'pd-QR03P6KN9G6PXM', '{"key": "d9574068bad6310139c3ebb6e58fc8b5fa53be2d5e38b1a91b1e0085678e3829", "params": {"content": "[action] executed k8s.cordon_node east-h100-00000: changed", "incident": "QR03P6KN9G6PXM"}, "tool": "pagerduty.note"}', 'done', 0, 1796305384.3725073, 1796305384.3725073, NULL, NULL, 1796305384.5816069),
	(15, 'prompt:pd-QR03P6KN9G6PXM:0491d7a76b3dfb51620876fda1f6ccf6c8123d1f5a58685a0c2f0ea8abe30c97', 'prompt', 'slack:pd-QR03P6KN9G6PXM', 'pd-QR03P6KN9G6PXM', '{"action_hash": "0491d7a76b3dfb51620876fda1f6ccf6c8123d1f5a58685a0c2f0ea8abe30c97"}', 'queued', 3, 1796305384.7098362, 1796305384.3915708, 1796305384.4429717, 'DataError: (psycopg.errors.StringDataRightTruncation) value too long for type character varying(64)', NULL),
	(12, '1f7cdaadf13a758553dcdd424198b7f4fdc34e338359d3234052437918684160', 'send', 'pagerduty:pd-QR03P6KN9G6PXM', 'pd-QR03P6KN9G6PXM', '{"key": "1f7cdaadf13a758553dcdd424198b7f4fdc34e338359d3234052437918684160", "params": {"content": "[action] executed notify.customer acme", "incident": "QR03P6KN9G6PXM"}, "tool": "pagerduty.note"}', 'queued', 1, 1796305384.6491754, 1796305384.3750212, 1796305384.5991755, 'BrokenPipeError: [Errno 32] Broken pipe', NULL);

SELECT pg_catalog.setval('public.alert_events_id_seq', 1, true);

SELECT pg_catalog.setval('public.approval_prompts_id_seq', 1, true);

SELECT pg_catalog.setval('public.audit_id_seq', 25, true);

SELECT pg_catalog.setval('public.billing_credits_id_seq', 1, false);

SELECT pg_catalog.setval('public.billing_metering_pauses_id_seq', 1, false);

SELECT pg_catalog.setval('public.billing_payout_holds_id_seq', 1, false);

SELECT pg_catalog.setval('public.billing_usage_id_seq', 22, true);

SELECT pg_catalog.setval('public.incident_timeline_id_seq', 26, true);

SELECT pg_catalog.setval('public.intake_events_id_seq', 1, true);

SELECT pg_catalog.setval('public.notify_outbox_id_seq', 1, true);

SELECT pg_catalog.setval('public.service_jobs_id_seq', 15, true);

ALTER TABLE ONLY public.alert_events
    ADD CONSTRAINT alert_events_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.approval_prompts
    ADD CONSTRAINT approval_prompts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.audit
    ADD CONSTRAINT audit_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.billing_credits
    ADD CONSTRAINT billing_credits_idempotency_key_key UNIQUE (idempotency_key);

ALTER TABLE ONLY public.billing_credits
    ADD CONSTRAINT billing_credits_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.billing_customers
    ADD CONSTRAINT billing_customers_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.billing_meter_cursors
    ADD CONSTRAINT billing_meter_cursors_pkey PRIMARY KEY (meter);

ALTER TABLE ONLY public.billing_metering_pauses
    ADD CONSTRAINT billing_metering_pauses_idempotency_key_key UNIQUE (idempotency_key);

ALTER TABLE ONLY public.billing_metering_pauses
    ADD CONSTRAINT billing_metering_pauses_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.billing_metering_pauses
    ADD CONSTRAINT billing_metering_pauses_resume_key_key UNIQUE (resume_key);

ALTER TABLE ONLY public.billing_payout_holds
    ADD CONSTRAINT billing_payout_holds_idempotency_key_key UNIQUE (idempotency_key);

ALTER TABLE ONLY public.billing_payout_holds
    ADD CONSTRAINT billing_payout_holds_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.billing_payout_holds
    ADD CONSTRAINT billing_payout_holds_release_key_key UNIQUE (release_key);

ALTER TABLE ONLY public.billing_usage
    ADD CONSTRAINT billing_usage_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.incident_timeline
    ADD CONSTRAINT incident_timeline_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.incidents
    ADD CONSTRAINT incidents_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.intake_events
    ADD CONSTRAINT intake_events_dedup_key_key UNIQUE (dedup_key);

ALTER TABLE ONLY public.intake_events
    ADD CONSTRAINT intake_events_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.notify_outbox
    ADD CONSTRAINT notify_outbox_idempotency_key_key UNIQUE (idempotency_key);

ALTER TABLE ONLY public.notify_outbox
    ADD CONSTRAINT notify_outbox_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.service_jobs
    ADD CONSTRAINT service_jobs_key_key UNIQUE (key);

ALTER TABLE ONLY public.service_jobs
    ADD CONSTRAINT service_jobs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.alert_events
    ADD CONSTRAINT uq_alert_events_dedup UNIQUE (dedup_key);

ALTER TABLE ONLY public.billing_usage
    ADD CONSTRAINT uq_billing_usage_meter_window_end UNIQUE (meter, window_end);

ALTER TABLE ONLY public.approval_prompts
    ADD CONSTRAINT uq_prompt_action UNIQUE (incident_id, action_hash);

ALTER TABLE ONLY public.incident_timeline
    ADD CONSTRAINT uq_timeline_seq UNIQUE (incident_id, seq);

CREATE INDEX ix_alert_events_fingerprint ON public.alert_events USING btree (fingerprint);

CREATE INDEX ix_alert_events_incident_id ON public.alert_events USING btree (incident_id);

CREATE INDEX ix_approval_prompts_incident_id ON public.approval_prompts USING btree (incident_id);

CREATE INDEX ix_approval_prompts_status ON public.approval_prompts USING btree (status);

CREATE INDEX ix_audit_action_hash ON public.audit USING btree (action_hash);

CREATE INDEX ix_audit_idempotency_key ON public.audit USING btree (idempotency_key);

CREATE INDEX ix_audit_incident_id ON public.audit USING btree (incident_id);

CREATE INDEX ix_billing_credits_customer ON public.billing_credits USING btree (customer);

CREATE INDEX ix_billing_credits_incident_id ON public.billing_credits USING btree (incident_id);

CREATE INDEX ix_billing_metering_pauses_incident_id ON public.billing_metering_pauses USING btree (incident_id);

CREATE INDEX ix_billing_payout_holds_incident_id ON public.billing_payout_holds USING btree (incident_id);

CREATE INDEX ix_billing_payout_holds_node ON public.billing_payout_holds USING btree (node);

CREATE INDEX ix_billing_usage_customer ON public.billing_usage USING btree (customer, window_end);

CREATE INDEX ix_billing_usage_meter ON public.billing_usage USING btree (meter);

CREATE INDEX ix_billing_usage_pod ON public.billing_usage USING btree (namespace, pod, window_end);

CREATE INDEX ix_incident_timeline_incident_id ON public.incident_timeline USING btree (incident_id);

CREATE INDEX ix_intake_events_status ON public.intake_events USING btree (status);

CREATE INDEX ix_notify_outbox_customer ON public.notify_outbox USING btree (customer);

CREATE INDEX ix_notify_outbox_incident_id ON public.notify_outbox USING btree (incident_id);

CREATE INDEX ix_service_jobs_incident_id ON public.service_jobs USING btree (incident_id);

CREATE INDEX ix_service_jobs_lane ON public.service_jobs USING btree (lane);

CREATE INDEX ix_service_jobs_status ON public.service_jobs USING btree (status);

CREATE UNIQUE INDEX uq_billing_hold_open ON public.billing_payout_holds USING btree (node) WHERE (released_at IS NULL);

CREATE UNIQUE INDEX uq_billing_pause_open ON public.billing_metering_pauses USING btree (namespace, pod) WHERE (resumed_at IS NULL);

ALTER TABLE ONLY public.billing_credits
    ADD CONSTRAINT billing_credits_customer_fkey FOREIGN KEY (customer) REFERENCES public.billing_customers(id);

