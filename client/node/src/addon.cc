// The native half of the pgbroker package: one Conn per libpgbroker
// connection. Statements go out with pgb_send and never wait; a uv_poll on
// pgb_socket() fires when results arrive, and they are handed to JavaScript
// in one call per wake-up. The poll is active (and keeps the process alive)
// only while statements are in flight; it is not stopped between a result
// and the statement its callback sends at once. pgb_socket() is kept armed
// (pgb_try_result has said "nothing yet") from the connect on, so a send
// needs no look of its own. pgb_batch and pgb_reset, which wait,
// run on the libuv thread pool; meanwhile that connection is theirs alone
// (close() then waits for them).
#include <napi.h>
#include <uv.h>

#include <string>
#include <vector>

extern "C" {
#include "pgbroker.h"
}

namespace {

struct Field {
	char code;
	const char *name;
};

// pg's DatabaseError property for each error field.
const Field kErrorFields[] = {
	{ PGB_DIAG_SEVERITY, "severity" },
	{ PGB_DIAG_MESSAGE_DETAIL, "detail" },
	{ PGB_DIAG_MESSAGE_HINT, "hint" },
	{ PGB_DIAG_STATEMENT_POSITION, "position" },
	{ PGB_DIAG_INTERNAL_POSITION, "internalPosition" },
	{ PGB_DIAG_INTERNAL_QUERY, "internalQuery" },
	{ PGB_DIAG_CONTEXT, "where" },
	{ PGB_DIAG_SCHEMA_NAME, "schema" },
	{ PGB_DIAG_TABLE_NAME, "table" },
	{ PGB_DIAG_COLUMN_NAME, "column" },
	{ PGB_DIAG_DATATYPE_NAME, "dataType" },
	{ PGB_DIAG_CONSTRAINT_NAME, "constraint" },
	{ PGB_DIAG_SOURCE_FILE, "file" },
	{ PGB_DIAG_SOURCE_LINE, "line" },
	{ PGB_DIAG_SOURCE_FUNCTION, "routine" },
};

// A result as a plain object: { status, command, rowCount, fields, rows }
// on success; { status, error: { message, code, severity, ... } } on failure.
// Rows are arrays of strings (null for NULL); JavaScript parses the types.
Napi::Object ToJs(Napi::Env env, const pgb_result *r)
{
	Napi::Object o = Napi::Object::New(env);
	int status = pgb_result_status(r);

	o.Set("status", status);
	if (!pgb_result_ok(r)) {
		Napi::Object e = Napi::Object::New(env);
		const char *m = pgb_result_error_field(r, PGB_DIAG_MESSAGE_PRIMARY);

		e.Set("message", m ? m : pgb_result_error(r));
		e.Set("code", pgb_sqlstate(r));
		for (const Field &f : kErrorFields) {
			const char *v = pgb_result_error_field(r, f.code);
			if (v)
				e.Set(f.name, v);
		}
		o.Set("error", e);
		return o;
	}
	o.Set("command", pgb_cmd_status(r));
	int nf = pgb_nfields(r), nt = pgb_ntuples(r);
	Napi::Array names = Napi::Array::New(env, nf);
	Napi::Array oids = Napi::Array::New(env, nf);
	Napi::Array mods = Napi::Array::New(env, nf);
	for (int c = 0; c < nf; c++) {
		names.Set(c, pgb_fname(r, c));
		oids.Set(c, pgb_ftype(r, c));
		mods.Set(c, pgb_fmod(r, c));
	}
	o.Set("names", names);
	o.Set("oids", oids);
	o.Set("mods", mods);
	Napi::Array rows = Napi::Array::New(env, nt);
	for (int i = 0; i < nt; i++) {
		Napi::Array row = Napi::Array::New(env, nf);
		for (int c = 0; c < nf; c++) {
			if (pgb_getisnull(r, i, c))
				row.Set(c, env.Null());
			else
				row.Set(c, Napi::String::New(env, pgb_getvalue(r, i, c),
							     (size_t)pgb_getlength(r, i, c)));
		}
		rows.Set(i, row);
	}
	o.Set("rows", rows);
	return o;
}

// Text parameters from a JavaScript array: strings, or null/undefined for
// SQL NULL (the JavaScript layer has already turned values into text).
struct Params {
	std::vector<std::string> text;
	std::vector<const char *> ptr;

	bool Load(Napi::Env env, Napi::Value v)
	{
		if (v.IsUndefined() || v.IsNull())
			return true;
		if (!v.IsArray()) {
			Napi::TypeError::New(env, "params must be an array").ThrowAsJavaScriptException();
			return false;
		}
		Napi::Array a = v.As<Napi::Array>();
		uint32_t n = a.Length();
		text.resize(n);
		ptr.resize(n);
		for (uint32_t i = 0; i < n; i++) {
			Napi::Value x = a.Get(i);
			if (x.IsNull() || x.IsUndefined()) {
				ptr[i] = nullptr;
				continue;
			}
			if (!x.IsString()) {
				Napi::TypeError::New(env, "a parameter is not a string")
					.ThrowAsJavaScriptException();
				return false;
			}
			text[i] = x.As<Napi::String>().Utf8Value();
			if (text[i].find('\0') != std::string::npos) {
				Napi::TypeError::New(env, "a parameter contains a NUL byte")
					.ThrowAsJavaScriptException();
				return false;
			}
			ptr[i] = text[i].c_str();
		}
		return true;
	}
	const char *const *Values() const { return ptr.empty() ? nullptr : ptr.data(); }
	int Count() const { return (int)ptr.size(); }
};

// What a COPY gets: the package has no COPY streams (libpgbroker has).
Napi::Object CopyRefused(Napi::Env env)
{
	Napi::Object o = Napi::Object::New(env);
	Napi::Object e = Napi::Object::New(env);

	e.Set("message", "COPY is not supported by the Node package (use libpgbroker's "
			 "pgb_put_copy_data and pgb_get_copy_data)");
	e.Set("code", PGB_SQLSTATE_UNSUPPORTED);
	e.Set("severity", "ERROR");
	o.Set("status", (int)PGB_FATAL_ERROR);
	o.Set("error", e);
	return o;
}

class Conn : public Napi::ObjectWrap<Conn> {
public:
	static Napi::Function Init(Napi::Env env)
	{
		return DefineClass(env, "Conn",
				   { InstanceMethod("send", &Conn::Send),
				     InstanceMethod("drain", &Conn::Drain),
				     InstanceMethod("watch", &Conn::Watch),
				     InstanceMethod("inFlight", &Conn::InFlight),
				     InstanceMethod("ok", &Conn::Ok),
				     InstanceMethod("errorMessage", &Conn::ErrorMessage),
				     InstanceMethod("stats", &Conn::Stats),
				     InstanceMethod("batch", &Conn::Batch),
				     InstanceMethod("reset", &Conn::Reset),
				     InstanceMethod("close", &Conn::Close) });
	}

	// new Conn(dir | null, onResults(resultsArray))
	Conn(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Conn>(info)
	{
		Napi::Env env = info.Env();
		std::string dir;
		bool has_dir = info.Length() > 0 && info[0].IsString();

		if (has_dir)
			dir = info[0].As<Napi::String>().Utf8Value();
		if (info.Length() < 2 || !info[1].IsFunction()) {
			Napi::TypeError::New(env, "Conn(dir, onResults)").ThrowAsJavaScriptException();
			return;
		}
		on_results_ = Napi::Persistent(info[1].As<Napi::Function>());
		ctx_ = std::make_unique<Napi::AsyncContext>(env, "pgbroker:results");
		conn_ = pgb_connect(has_dir ? dir.c_str() : nullptr);
		if (!conn_) {
			Napi::Error::New(env, "out of memory").ThrowAsJavaScriptException();
			return;
		}
		napi_get_uv_event_loop(env, &loop_);
		Arm();
	}

	~Conn() override { Shut(); }

private:
	pgb_conn *conn_ = nullptr;
	long long copy_refused_ = 0; // a COPY answered PB009: its final result is dropped
	uv_loop_t *loop_ = nullptr;
	uv_poll_t *poll_ = nullptr;   // owned by libuv once closing
	bool polling_ = false;
	bool worker_ = false;   // a batch or reset runs on the thread pool
	bool closing_ = false;  // close() came while it ran: shut when it ends
	Napi::FunctionReference on_results_;
	std::unique_ptr<Napi::AsyncContext> ctx_;

	// Stop watching; the handle is freed in its close callback.
	void Unwatch(bool close)
	{
		if (!poll_)
			return;
		if (polling_)
			uv_poll_stop(poll_);
		polling_ = false;
		if (close) {
			uv_close(reinterpret_cast<uv_handle_t *>(poll_),
				 [](uv_handle_t *h) { delete reinterpret_cast<uv_poll_t *>(h); });
			poll_ = nullptr;
		}
	}

	// With nothing in flight: the look that arms pgb_socket() for the
	// next result (it cannot find one).
	void Arm()
	{
		long long id;

		if (conn_ && !worker_ && pgb_in_flight(conn_) == 0)
			pgb_clear(pgb_try_result(conn_, &id));
	}

	// A worker thread is done with conn_ (on the loop thread); its waits
	// did not leave pgb_socket() armed.
	void WorkerDone()
	{
		worker_ = false;
		if (closing_)
			Shut();
		else
			Arm();
	}

	void Shut()
	{
		Unwatch(true);
		if (conn_)
			pgb_finish(conn_);
		conn_ = nullptr;
	}

	// Every result that is ready: [id, result, id, result, ...].
	Napi::Array TakeReady(Napi::Env env)
	{
		Napi::Array out = Napi::Array::New(env);
		uint32_t n = 0;
		pgb_result *r;
		long long id;

		while (conn_ && !worker_ && (r = pgb_try_result(conn_, &id))) {
			int st = pgb_result_status(r);

			if (id == copy_refused_) {
				// the refused COPY's final result: its query has its answer
				copy_refused_ = 0;
				pgb_clear(r);
				continue;
			}
			out.Set(n++, Napi::Number::New(env, (double)id));
			if (st == PGB_COPY_IN || st == PGB_COPY_OUT) {
				// No COPY streams in this package: end it (COPY IN fails,
				// COPY OUT's rows are dropped by the next pgb_try_result).
				if (st == PGB_COPY_IN)
					pgb_put_copy_end(conn_, "COPY is not supported by the Node package");
				copy_refused_ = id;
				out.Set(n++, CopyRefused(env));
			} else {
				out.Set(n++, ToJs(env, r));
			}
			pgb_clear(r);
		}
		return out;
	}

	// Poll while something is in flight, not otherwise: an idle process
	// keeps no handle alive.
	void Rearm()
	{
		if (worker_)
			return;
		int fd = conn_ ? pgb_socket(conn_) : -1;
		bool want = conn_ && pgb_in_flight(conn_) > 0 && fd >= 0;

		if (want && !poll_) {
			poll_ = new uv_poll_t;
			if (uv_poll_init(loop_, poll_, fd) != 0) {
				delete poll_;
				poll_ = nullptr;
				return;
			}
			poll_->data = this;
		}
		if (want && !polling_) {
			uv_poll_start(poll_, UV_READABLE | UV_DISCONNECT, OnReadable);
			polling_ = true;
		} else if (!want && polling_) {
			uv_poll_stop(poll_);
			polling_ = false;
		}
	}

	static void OnReadable(uv_poll_t *h, int status, int events)
	{
		Conn *self = static_cast<Conn *>(h->data);
		(void)status;
		(void)events;
		Napi::Env env = self->on_results_.Env();
		Napi::HandleScope scope(env);
		Napi::Array ready = self->TakeReady(env);

		// A throw in JavaScript must not unwind through libuv: it becomes
		// the process's uncaught exception, as from any other callback.
		if (ready.Length() > 0) {
			try {
				self->on_results_.MakeCallback(self->Value(), { ready }, *self->ctx_);
			} catch (const Napi::Error &e) {
				napi_fatal_exception(env, e.Value());
			}
		}
		// After the callback: what it sent keeps the poll running (no
		// epoll_ctl between one statement and the next). It may have
		// closed the connection: Rearm then stops nothing.
		self->Rearm();
	}

	// send(sql, params, flags) -> id, or -1 (see errorMessage)
	Napi::Value Send(const Napi::CallbackInfo &info)
	{
		Napi::Env env = info.Env();
		Params p;

		if (info.Length() < 1 || !info[0].IsString()) {
			Napi::TypeError::New(env, "send(sql, params, flags)").ThrowAsJavaScriptException();
			return env.Undefined();
		}
		std::string sql = info[0].As<Napi::String>().Utf8Value();
		if (!p.Load(env, info.Length() > 1 ? info[1] : env.Undefined()))
			return env.Undefined();
		int flags = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value()
								    : 0;
		if (worker_) {
			Napi::Error::New(env, "send() while a batch or reset runs").ThrowAsJavaScriptException();
			return env.Undefined();
		}
		if (!conn_)
			return Napi::Number::New(env, -1);
		long long id = pgb_send(conn_, sql.c_str(), p.Count(), p.Values(), flags);
		if (id > 0)
			Rearm();
		return Napi::Number::New(env, (double)id);
	}

	// drain() -> ready results; then polls for the rest.
	Napi::Value Drain(const Napi::CallbackInfo &info)
	{
		Napi::Array ready = TakeReady(info.Env());

		Rearm();
		return ready;
	}

	Napi::Value Watch(const Napi::CallbackInfo &info)
	{
		Rearm();
		return info.Env().Undefined();
	}

	Napi::Value InFlight(const Napi::CallbackInfo &info)
	{
		return Napi::Number::New(info.Env(), conn_ ? pgb_in_flight(conn_) : 0);
	}

	Napi::Value Ok(const Napi::CallbackInfo &info)
	{
		return Napi::Boolean::New(info.Env(),
					  conn_ && pgb_status(conn_) == PGB_CONNECTION_OK);
	}

	Napi::Value ErrorMessage(const Napi::CallbackInfo &info)
	{
		return Napi::String::New(info.Env(), conn_ ? pgb_error_message(conn_)
							   : "connection closed");
	}

	Napi::Value Stats(const Napi::CallbackInfo &info)
	{
		Napi::Env env = info.Env();
		struct pgb_conn_stats st;
		Napi::Object o = Napi::Object::New(env);

		if (!conn_ || pgb_conn_stats(conn_, &st) < 0)
			return env.Null();
		o.Set("total", (double)st.total);
		o.Set("failed", (double)st.failed);
		o.Set("successRate", st.success_rate);
		o.Set("meanRttUs", st.mean_rtt_us);
		o.Set("maxRttUs", (double)st.max_rtt_us);
		return o;
	}

	Napi::Value Batch(const Napi::CallbackInfo &info);
	Napi::Value Reset(const Napi::CallbackInfo &info);

	Napi::Value Close(const Napi::CallbackInfo &info)
	{
		if (worker_)
			closing_ = true;
		else
			Shut();
		return info.Env().Undefined();
	}

	friend class BatchWorker;
	friend class ResetWorker;
};

// pgb_reset on the thread pool: it waits for the broker's answer (or
// connects again when the broker went away). Nothing is in flight and
// nothing else uses the connection meanwhile.
class ResetWorker : public Napi::AsyncWorker {
public:
	ResetWorker(Napi::Env env, Conn *self)
		: Napi::AsyncWorker(env), self_(self), c_(self->conn_), def_(env)
	{
		keep_ = Napi::Persistent(self->Value());
		self->worker_ = true;
	}
	Napi::Promise Promise() { return def_.Promise(); }

	void Execute() override
	{
		rc_ = pgb_reset(c_);
		if (rc_ < 0)
			msg_ = pgb_error_message(c_);
	}

	void OnOK() override
	{
		self_->WorkerDone();
		def_.Resolve(Napi::String::New(Env(), rc_ == 0 ? "" : msg_));
	}

	void OnError(const Napi::Error &e) override
	{
		self_->WorkerDone();
		def_.Reject(e.Value());
	}

private:
	Conn *self_;
	pgb_conn *c_;
	Napi::ObjectReference keep_;  // the Conn lives until this is done
	Napi::Promise::Deferred def_;
	int rc_ = -1;
	std::string msg_;
};

// reset() -> Promise<"" on success, else why>; only with nothing in flight
// and no batch running.
Napi::Value Conn::Reset(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();

	if (!conn_ || worker_ || closing_ || pgb_in_flight(conn_) > 0) {
		Napi::Error::New(env, "reset() needs an open connection with nothing in flight")
			.ThrowAsJavaScriptException();
		return env.Undefined();
	}
	// pgb_reset may give pgb_socket() a new file under the same number:
	// the next statement watches it with a new handle.
	Unwatch(true);
	auto *w = new ResetWorker(env, this);
	Napi::Promise p = w->Promise();
	w->Queue();
	return p;
}

// pgb_batch on the thread pool: the connection is this batch's alone
// (the JavaScript layer lends it to one batch at a time).
class BatchWorker : public Napi::AsyncWorker {
public:
	BatchWorker(Napi::Env env, Conn *self)
		: Napi::AsyncWorker(env), self_(self), c_(self->conn_), def_(env)
	{
	}
	~BatchWorker() override
	{
		for (pgb_result *r : res_)
			pgb_clear(r);
	}

	std::vector<std::string> sql_;
	std::vector<Params> params_;
	Napi::Promise Promise() { return def_.Promise(); }

	void Execute() override
	{
		std::vector<pgb_stmt> st(sql_.size());
		for (size_t i = 0; i < sql_.size(); i++)
			st[i] = { sql_[i].c_str(), params_[i].Count(), params_[i].Values() };
		res_.assign(sql_.size(), nullptr);
		pgb_batch(c_, st.data(), (int)st.size(), res_.data());
	}

	// Called once the batch is accepted: from then on the Conn is busy.
	void Claim()
	{
		keep_ = Napi::Persistent(self_->Value());
		self_->worker_ = true;
	}

	void OnOK() override
	{
		self_->WorkerDone();
		Napi::Env env = Env();
		Napi::Array out = Napi::Array::New(env, res_.size());
		for (size_t i = 0; i < res_.size(); i++)
			out.Set((uint32_t)i, ToJs(env, res_[i]));
		def_.Resolve(out);
	}

	void OnError(const Napi::Error &e) override
	{
		self_->WorkerDone();
		def_.Reject(e.Value());
	}

private:
	Conn *self_;
	pgb_conn *c_;
	Napi::ObjectReference keep_;
	Napi::Promise::Deferred def_;
	std::vector<pgb_result *> res_;
};

// batch([[sql, params], ...]) -> Promise<[result, ...]>; never two at once
// on one Conn, and no send() on it meanwhile.
Napi::Value Conn::Batch(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();

	if (info.Length() < 1 || !info[0].IsArray() || !conn_ || worker_ || closing_) {
		Napi::TypeError::New(env, "batch([[sql, params], ...]) on an open connection")
			.ThrowAsJavaScriptException();
		return env.Undefined();
	}
	Napi::Array a = info[0].As<Napi::Array>();
	auto *w = new BatchWorker(env, this);
	uint32_t n = a.Length();
	w->sql_.resize(n);
	w->params_.resize(n);
	for (uint32_t i = 0; i < n; i++) {
		Napi::Value item = a.Get(i);
		if (!item.IsArray()) {
			delete w;
			Napi::TypeError::New(env, "batch item is not [sql, params]").ThrowAsJavaScriptException();
			return env.Undefined();
		}
		Napi::Array pair = item.As<Napi::Array>();
		Napi::Value s = pair.Get((uint32_t)0);
		if (!s.IsString() || !w->params_[i].Load(env, pair.Get((uint32_t)1))) {
			delete w;
			if (!env.IsExceptionPending())
				Napi::TypeError::New(env, "batch statement text is not a string")
					.ThrowAsJavaScriptException();
			return env.Undefined();
		}
		w->sql_[i] = s.As<Napi::String>().Utf8Value();
	}
	Napi::Promise p = w->Promise();
	w->Claim();
	w->Queue();
	return p;
}

// health(dir | null) -> pgb_pool_health as an object
Napi::Value Health(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	std::string dir;
	bool has_dir = info.Length() > 0 && info[0].IsString();
	struct pgb_health h;
	Napi::Object o = Napi::Object::New(env);

	if (has_dir)
		dir = info[0].As<Napi::String>().Utf8Value();
	int rc = pgb_pool_health(has_dir ? dir.c_str() : nullptr, &h);
	o.Set("ok", rc == 0);
	o.Set("status", h.status_name);
	o.Set("healthy", h.healthy != 0);
	o.Set("total", h.total);
	o.Set("idle", h.idle);
	o.Set("active", h.active);
	o.Set("waiting", h.waiting);
	o.Set("utilizationPercent", h.utilization_percent);
	o.Set("timestampMs", (double)h.timestamp_ms);
	o.Set("reasons", h.reasons);
	o.Set("recommendations", h.recommendations);
	o.Set("error", h.error);
	return o;
}

Napi::Value SqlstateIsTransient(const Napi::CallbackInfo &info)
{
	std::string s = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
	return Napi::Boolean::New(info.Env(), pgb_sqlstate_is_transient(s.c_str()) != 0);
}

Napi::Value SqlstateRetrySafe(const Napi::CallbackInfo &info)
{
	std::string s = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
	return Napi::Boolean::New(info.Env(), pgb_sqlstate_retry_safe(s.c_str()) != 0);
}

Napi::Object Init(Napi::Env env, Napi::Object exports)
{
	exports.Set("sqlstateIsTransient", Napi::Function::New(env, SqlstateIsTransient));
	exports.Set("sqlstateRetrySafe", Napi::Function::New(env, SqlstateRetrySafe));
	exports.Set("Conn", Conn::Init(env));
	exports.Set("health", Napi::Function::New(env, Health));
	exports.Set("INDEPENDENT", (int)PGB_INDEPENDENT);
	exports.Set("IDEMPOTENT", (int)PGB_IDEMPOTENT);
	return exports;
}

} // namespace

NODE_API_MODULE(pgbroker, Init)
