/*
 * metaedge: few-shot adaptation on a device, in C99 with libc/libm only and no dynamic allocation.
 *
 *   me_model   a validated view of a model.mebin buffer (the buffer must outlive it; nothing is copied)
 *   me_session the working state of one adaptation: lives in an arena the caller provides
 *
 *   me_model m; me_session s;
 *   static unsigned char arena[...];                        // me_arena_bytes(&m, max_shots) bytes
 *   me_model_load(&m, model_data, sizeof model_data);
 *   me_session_init(&s, &m, arena, sizeof arena, max_shots);
 *   me_adapt(&s, xs, ys, 3, me_default_steps(&m), ME_GUARD, &info);   // physical units in ...
 *   me_predict(&s, x, n, out);                              // ... and out
 *   me_state_write(&s, flash_buf, sizeof flash_buf, &len);  // keep the adapted state; me_state_read restores it
 *
 * Every function returns an me_status; the library never prints and never allocates.
 * File format: docs/firmware.md.
 */
#ifndef METAEDGE_H
#define METAEDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ME_API marks the public functions: the only symbols the shared library exports (it is built with hidden
 * visibility). Windows: METAEDGE_BUILD_DLL while building the DLL, METAEDGE_USE_DLL when linking against it;
 * static builds (firmware) define neither. */
#if defined(_WIN32) || defined(__CYGWIN__)
#if defined(METAEDGE_BUILD_DLL)
#define ME_API __declspec(dllexport)
#elif defined(METAEDGE_USE_DLL)
#define ME_API __declspec(dllimport)
#else
#define ME_API
#endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#define ME_API __attribute__((visibility("default")))
#else
#define ME_API
#endif

/* API version: the minor grows with additions, the major with any incompatible change (a signature, a field of
 * a public struct, a status code's meaning). me_api_version() is the library's (MAJOR << 16 | MINOR), to check a
 * shared library against the header a binding was written for. */
#define ME_API_VERSION_MAJOR 1u
#define ME_API_VERSION_MINOR 2u
#define ME_API_VERSION ((ME_API_VERSION_MAJOR << 16) | ME_API_VERSION_MINOR)

#define ME_FORMAT_VERSION 5u  /* the newest model.mebin format this library reads (it reads 1 to 4 too) */
#define ME_MAX_HORIZON 4096u  /* control section: longest planning horizon */
#define ME_MAX_CANDIDATES 65536u /* control section: most candidate sequences per round */
#define ME_MAX_ITERATIONS 1024u  /* control section: most CEM rounds */
#define ME_STATE_VERSION 2u   /* the adapted-state format me_state_write writes and me_state_read reads */
#define ME_STATE_HEADER_BYTES 80u /* a state is the header, 4 bytes per float of the state, then a CRC-32 */
#define ME_MAX_LAYERS 32u     /* layer table entries */
#define ME_MAX_DIM 65536u     /* widest layer */
#define ME_MAX_SHOTS 65536u   /* largest support set an arena may be sized for */
#define ME_MAX_LEVELS 16u     /* interval levels a model.mebin may carry */

typedef enum me_status {
    ME_OK = 0,
    ME_ERR_NULL = 1,        /* a required pointer was NULL */
    ME_ERR_TRUNCATED = 2,   /* the buffer is shorter than the header or the sizes it declares */
    ME_ERR_MAGIC = 3,       /* not a model.mebin */
    ME_ERR_VERSION = 4,     /* format version newer (or older) than this library reads */
    ME_ERR_CRC = 5,         /* payload CRC-32 mismatch: corrupt or modified */
    ME_ERR_FORMAT = 6,      /* inconsistent counts, offsets, shapes or values in the file */
    ME_ERR_UNSUPPORTED = 7, /* layer kind, loss or solver unknown to this library */
    ME_ERR_ARENA = 8,       /* arena too small or misaligned */
    ME_ERR_SHOTS = 9,       /* no sample, or more than the session's max_shots */
    ME_ERR_NONFINITE = 10,  /* NaN or infinity in inputs, targets or a state */
    ME_ERR_LABEL = 11,      /* a class label out of range, not whole, or a class without a sample */
    ME_ERR_ARGUMENT = 12,   /* another bad argument (sizes, counts) */
    ME_ERR_SINGULAR = 13,   /* the Gauss-Newton system is not positive definite */
    ME_ERR_STATE = 14,      /* prediction needs prototypes: adapt or set a state first */
    ME_ERR_MODEL = 15       /* a saved state belongs to another model (its model CRC differs) */
} me_status;

typedef enum me_task { ME_TASK_REGRESSION = 0, ME_TASK_CLASSIFICATION = 1 } me_task;
typedef enum me_loss { ME_LOSS_MSE = 0, ME_LOSS_CROSS_ENTROPY = 1 } me_loss;
typedef enum me_solver { ME_SOLVER_SGD = 0, ME_SOLVER_GAUSS_NEWTON = 1, ME_SOLVER_PROTOTYPES = 2 } me_solver;

typedef enum me_layer_kind {
    ME_LAYER_DENSE = 1,   /* y = x W^T + b, W (out, in) row-major as in torch.nn.Linear */
    ME_LAYER_RELU = 2,
    ME_LAYER_TANH = 3,
    ME_LAYER_SIGMOID = 4,
    ME_LAYER_SKIP = 5,    /* y = prev + x0 W^T + b with x0 the (normalised) network input; last layer only */
    ME_LAYER_CONV1D = 6,  /* (C_in, L) -> (C_out, L): kernel 3, stride 1, zero padding 1; W (C_out, C_in, 3) as
                           * torch.nn.Conv1d stores it; format version 2, prototype solver only */
    ME_LAYER_MAXPOOL1D = 7 /* (C, L) -> (C, floor(L / 2)): max over windows of 2, as torch.nn.MaxPool1d(2) */
} me_layer_kind;

typedef struct me_adapt_info {
    uint32_t steps_run;    /* steps attempted */
    uint32_t steps_kept;   /* steps kept (the guard stops at the first that raised the support loss) */
    float loss_before;     /* support loss at the initial state (standardised units) */
    float loss_after;      /* support loss at the returned state */
} me_adapt_info;

#define ME_GUARD 1u        /* me_adapt flags: roll back a step that raises the support loss, then stop */

/* What a model.mebin declares, read by the library's own parser (me_model_info), for bindings and tools that
 * must not parse the header themselves. */
typedef struct me_model_info_t {
    uint32_t format_version; /* 1 to 5 */
    uint32_t bytes;          /* total_bytes of the model */
    uint32_t crc;            /* its CRC-32 field: the model's identity in saved states */
    uint32_t task, loss, solver;  /* me_task, me_loss, me_solver */
    uint32_t default_steps;
    uint32_t in_dim, out_dim; /* out_dim: targets, class logits, or embedding width (prototypes) */
    uint32_t n_params, n_theta, n_layers;
    uint32_t in_channels, in_length; /* (channels, length) of one input when the first layer is conv1d, else 0, 0 */
    float min_damping;       /* Gauss-Newton: added to every exp(rate) on the diagonal; 0 for other solvers */
} me_model_info_t;

struct me_model;
struct me_session;
typedef struct me_model me_model;
typedef struct me_session me_session;

/* ME_API_VERSION of the library (compare with the header's) */
ME_API uint32_t me_api_version(void);
ME_API const char *me_strerror(me_status status);
ME_API uint32_t me_crc32(const void *data, size_t len);

/* Parse and validate a model.mebin of len bytes. */
ME_API me_status me_model_load(me_model *model, const void *buf, size_t len);
/* Validate a model.mebin (as me_model_load) and describe it; *info is zeroed on an error. Uses a temporary
 * me_model on the stack (about 1 KiB). */
ME_API me_status me_model_info(const uint8_t *buf, size_t len, me_model_info_t *info);
/* Arena bytes me_session_init needs for up to max_shots support samples (0 if the arguments are invalid). */
ME_API size_t me_arena_bytes(const me_model *model, uint32_t max_shots);
/* Carve the arena (16-byte aligned pointer recommended; at least 8-byte) and load theta0. */
ME_API me_status me_session_init(me_session *s, const me_model *model, void *arena, size_t arena_bytes,
                                 uint32_t max_shots);

ME_API uint32_t me_default_steps(const me_model *model);
ME_API uint32_t me_theta_size(const me_session *s);   /* floats in the current state (prototypes: ways * dim) */
ME_API const float *me_theta(const me_session *s);    /* the current state: adapted tensors in model order */
ME_API me_status me_set_theta(me_session *s, const float *theta, uint32_t size);
ME_API me_status me_reset(me_session *s);            /* back to the meta-learned initial state (control models:
                                                      * the window of transitions is forgotten too) */
/* The last me_adapt's info, or of the state me_state_read restored; after me_reset / me_set_theta: no steps and
 * NaN losses (unknown). */
ME_API me_status me_last_adapt_info(const me_session *s, me_adapt_info *info);

/* Adapted state, format 2 (docs/firmware.md), little-endian on every target:
 *   magic "MEST", version, header bytes, total bytes, the model's CRC-32, the float count, the last adapt's
 *   steps and losses, 32 bytes of bundle identity (zero when written here), the state's floats, then a CRC-32
 *   of every byte before it.
 * me_state_write: the current state into buf (cap bytes; ME_ERR_ARGUMENT when it does not fit, *len then still
 * holds the bytes needed); a prototype session without prototypes gives ME_ERR_STATE.
 * me_state_read: checks everything (size, magic, version, CRC, model, float count, finiteness) before it
 * changes anything: on any error the session is left as it was. Bytes after total bytes are ignored. */
ME_API me_status me_state_write(const me_session *s, uint8_t *buf, size_t cap, size_t *len);
ME_API me_status me_state_read(me_session *s, const uint8_t *buf, size_t len);

/* Adapt on n support samples: x (n, in_dim) and y (n, out_dim) in physical units, or for classification y (n)
 * holding class numbers 0..ways-1 as floats. Starts from the current state (me_reset for theta0).
 * SGD: steps of theta -= rates * grad; Gauss-Newton: damped Gauss-Newton steps; prototypes: class means
 * (steps ignored). info may be NULL. On an error the state is unchanged. */
ME_API me_status me_adapt(me_session *s, const float *x, const float *y, uint32_t n, uint32_t steps,
                          uint32_t flags, me_adapt_info *info);
/* Regression: predictions (n, out_dim) in physical units; classification: logits (n, classes). Any n. */
ME_API me_status me_predict(me_session *s, const float *x, uint32_t n, float *out);
/* Support loss of the current state (standardised units for regression), n <= max_shots. */
ME_API me_status me_support_loss(me_session *s, const float *x, const float *y, uint32_t n, float *loss);
/* Classes in a prediction: out_dim, or the number of prototypes. */
ME_API uint32_t me_classes(const me_session *s);

/* One adaptation as a journal record (docs/journal.md): what me_journal_format writes. Strings are NUL-terminated
 * UTF-8 of 1..512 bytes; the optional ones may be NULL (written as null). */
typedef struct me_journal_entry {
    const char *record_id;          /* unique per record (e.g. a uuid4's 32 hex digits): the idempotency key */
    const char *unit;               /* the unit's id (serial number) */
    const char *device_profile;     /* optional: the device profile, e.g. "cortex-m4" */
    const char *host_id;            /* this device's id */
    const char *manifest_sha256;    /* the bundle: sha256 hex of its manifest.json (fixed at build time) */
    const char *signing_key_id;     /* optional: the key id of its manifest.sig */
    const char *time;               /* ISO 8601 in UTC, e.g. "2026-12-01T09:42:01Z" */
    const float *support_x;         /* (n, in_dim) support inputs, physical units */
    const float *support_y;         /* (n, out_dim) support targets, physical units (class numbers) */
    uint32_t n, in_dim, out_dim;    /* 1 <= n <= 10000 */
    me_adapt_info info;             /* steps and support losses (me_adapt's info); non-finite losses: null */
    const char *state_sha256;       /* optional: sha256 hex of the state written (e.g. by the host) */
    const char *start_state_sha256; /* optional: that of the state the adaptation started from */
} me_journal_entry;

/* Format one JSON Lines adaptation record (schema "metaedge.journal/1", floats as %.9g, ending in '\n') into buf
 * and NUL-terminate it; *len = the line's bytes (with the '\n', without the NUL). When cap < *len + 1: *len still
 * holds the line's bytes, buf[0] = '\0' (when cap > 0) and ME_ERR_ARGUMENT. Also ME_ERR_NULL (entry, buf, len or
 * a required string or array NULL), ME_ERR_ARGUMENT (an empty or over-long string, a zero size, n > 10000,
 * steps_kept > steps_run) and ME_ERR_NONFINITE (NaN or infinity in the support). Never allocates; uses
 * snprintf for the floats (newlib-nano: link with -u _printf_float). */
ME_API me_status me_journal_format(const me_journal_entry *entry, char *buf, size_t cap, size_t *len);

/* Predictive intervals and guided reference points (API 1.1): Gauss-Newton (ridge) models exported with fitted
 * intervals (format 4; others: ME_ERR_UNSUPPORTED). xs: the k support inputs (physical units) the session was
 * adapted on (k <= max_shots; 0 allowed: the prior). Standardised units inside, as the Python runtime
 * (metaedge.runtime.intervals): spread = sigma_o * sqrt(1 + j(x)^T (J^T J + diag(exp(rates) + min_damping))^-1
 * j(x)), half-width = factor(level) * y_std_o * spread, with J, j the Jacobians at the session's state.
 * me_predict_interval: out, lower, upper (n, out_dim); level within the fitted ones (else ME_ERR_ARGUMENT).
 * me_suggest: for each of the m candidates (m <= max_shots; single-output models), the reduction of the integrated
 * predictive variance over the candidates (physical units squared) into scores[m] (may be NULL), and the index of
 * the largest into *best. */
ME_API me_status me_predict_interval(me_session *s, const float *xs, uint32_t k, const float *x, uint32_t n,
                                     float level, float *out, float *lower, float *upper);
ME_API me_status me_suggest(me_session *s, const float *xs, uint32_t k, const float *candidates, uint32_t m,
                            uint32_t *best, float *scores);
/* me_plan_points (API 1.2): the `count` candidates (of m, m <= max_shots; single-output models;
 * count <= ME_MAX_PLAN) still to take, planned as one design that most lowers the integrated predictive variance
 * given the k support inputs (greedy start, then exchanges of one planned point while one improves the set), as
 * Model.suggest(budget=) in Python. exclude[m] (may be NULL): nonzero marks candidates not to pick. plan[count]
 * receives the indices, the one worth most alone first, the others in plan order; work holds m * n_theta floats. */
#define ME_MAX_PLAN 16u
ME_API me_status me_plan_points(me_session *s, const float *xs, uint32_t k, const float *candidates, uint32_t m,
                                uint32_t count, const uint8_t *exclude, uint32_t *plan, float *work);

/* ---- model-predictive control (API 1.2; model.mebin format 5 with a control section) ---------------------------
 * A dynamics model maps concat(state, action) (state_dim + action_dim inputs) to the state change over one
 * control period (state_dim outputs). The control section states the planner (metaedge.runtime.control, whose
 * module docstring fixes the random stream): random shooting or CEM over `candidates` sequences of `horizon`
 * actions inside [action_low, action_high], quadratic cost sum_t (s_t - target)^T diag(q) (s_t - target) +
 * a_t^T diag(r) a_t (the `wrap` state dims are angles kept in [-pi, pi)), rolled out in float32 through the
 * session's current (adapted) network, costs in float64, random numbers from splitmix64 (seed, counter). A
 * session of such a model holds at least `window` shots (max_shots is raised to it) and its arena holds the
 * planner and the window of transitions: me_arena_bytes counts them. */
typedef struct me_control_info_t {
    uint32_t state_dim, action_dim;
    uint32_t planner;      /* 0 random shooting, 1 CEM */
    uint32_t horizon, candidates, iterations, elites;
    uint32_t window;       /* transitions kept for re-adaptation (M) */
    uint32_t adapt_every;  /* re-adapt after every K-th observation */
    uint32_t n_wrap;       /* angle state dims */
    uint64_t seed;
    float dt;              /* seconds per control step (for reports) */
} me_control_info_t;

/* The model's control section (ME_ERR_UNSUPPORTED when it has none; *info zeroed then). */
ME_API me_status me_control_info(const me_model *model, me_control_info_t *info);
/* Plan from state (state_dim floats) and write the action to apply now into action (action_dim floats): plan call
 * k since the session's creation or me_plan_reset draws from counter (k * iterations) * 2 * N * H * A on. CEM
 * warm-starts from its last mean shifted by one step. Candidates with NaN costs rank last. Uses the network's
 * activation buffers (x0 and the layer outputs): no other call may run on the session meanwhile. */
ME_API me_status me_plan(me_session *s, const float *state, float *action);
/* Planner back to its start: call counter 0, CEM mean at the middle of the action range. */
ME_API me_status me_plan_reset(me_session *s);
/* The last plan's sequence (horizon x action_dim floats: the best candidate, or CEM's final mean) and its cost
 * (the lowest of the last round); either may be NULL. ME_ERR_STATE before the first plan. */
ME_API me_status me_plan_result(const me_session *s, float *sequence, double *cost);
/* Record one transition: (state, action) -> next_state - state (the `wrap` dims of the change wrapped to
 * [-pi, pi)), kept in a window of the last `window` transitions; after every adapt_every-th observation re-adapt
 * from theta0 on the window (oldest first; fewer while it fills) with the model's default steps and ME_GUARD, as
 * me_reset + me_adapt would. Non-finite values are refused before anything is stored; a failed adaptation (e.g.
 * ME_ERR_SINGULAR) leaves the previous state. me_reset forgets the window too. */
ME_API me_status me_observe(me_session *s, const float *state, const float *action, const float *next_state);

/* ---- policy adaptation (meta-RL): advantages for a policy bundle's adapt_step graph ---------------------------
 * Discounted returns and advantages with the linear feature baseline (Duan et al. 2016) of one task's episodes,
 * the definition of metaedge.runtime.policy.advantages: obs (episodes, steps, obs_dim) and rewards (episodes,
 * steps) row-major in; advantages (and returns, unless NULL) (episodes, steps) out; flags ME_ADV_NORMALIZE
 * standardises the advantages. work: me_advantages_work(obs_dim) doubles of the caller's (no malloc).
 * ME_ERR_NONFINITE for NaN/inf inputs, ME_ERR_SINGULAR when the baseline's normal equations stay indefinite. */
#define ME_ADV_NORMALIZE 1u
ME_API size_t me_advantages_work(uint32_t obs_dim);
ME_API me_status me_advantages(const float *obs, const float *rewards, uint32_t episodes, uint32_t steps,
                               uint32_t obs_dim, float discount, uint32_t flags, double *work, float *returns,
                               float *advantages);

/* sizeof(me_model) and sizeof(me_session), for language bindings that allocate them */
ME_API size_t me_sizeof_model(void);
ME_API size_t me_sizeof_session(void);

/* ---- private: storage layout -------------------------------------------------------------------------------
 * Declared here only so that firmware can place an me_model and an me_session in static memory or on the stack
 * without malloc. The fields are NOT part of the API: they change between releases without notice (ABI
 * bindings size them with me_sizeof_model / me_sizeof_session). Read what a model declares with me_model_info
 * and a session's state with the functions above. */
#define ME_ADAPT_WEIGHT 1u /* me_layer.flags: the weight is part of the adapted state */
#define ME_ADAPT_BIAS 2u   /* me_layer.flags: the bias is part of the adapted state */

typedef struct me_layer {
    uint8_t kind;          /* me_layer_kind */
    uint8_t flags;         /* ME_ADAPT_* (dense and skip layers) */
    uint32_t in, out;      /* widths (conv / pool: channels x length, flattened as torch's flatten(1)) */
    uint32_t len;          /* conv / pool: input length L (channels = in / len); 0 for other kinds */
    uint32_t w_param, b_param;  /* offsets (floats) into the parameter section */
    uint32_t w_theta, b_theta;  /* offsets (floats) into the adapted vector, when adapted */
} me_layer;

/* A validated model: scalar fields copied out, arrays left in the caller's buffer (read with memcpy, so the
 * buffer needs no alignment). Prototype sessions read the weights in place when the buffer is 4-byte aligned on a
 * little-endian target (model_data.h's array is), and copy them into the arena otherwise. */
struct me_model {
    const unsigned char *buf;
    uint32_t bytes, crc;       /* total_bytes and the CRC-32 field */
    uint8_t version, task, loss, solver;
    float min_damping;         /* Gauss-Newton diagonal floor: from the file (version 3) or 1e-6 (versions 1, 2) */
    uint16_t default_steps;
    uint32_t in_dim, out_dim;  /* out_dim: targets, class logits, or embedding width (prototypes) */
    uint32_t n_params, n_theta, n_layers, max_width;
    me_layer layers[ME_MAX_LAYERS];
    uint32_t off_norm, off_params, off_rates;
    uint32_t off_uncertainty, n_levels; /* format 4: the interval section (0, 0: none) */
    uint32_t off_control;      /* format 5: the control section (0: none), parsed into ctl */
    struct me_control_spec {
        uint32_t state_dim, action_dim, planner, n_wrap, horizon, candidates, iterations, elites, window,
            adapt_every;
        uint64_t seed;
        float dt;
        uint32_t off_arrays;   /* low[A], high[A], target[S] (f32), q[S], r[A] (f64), wrap[n_wrap] (u32) */
    } ctl;
};

/* Working state in the caller's arena (pointers into it). */
struct me_session {
    const me_model *model;
    uint32_t max_shots;         /* activation buffer rows (prototypes: 1, a sample at a time) */
    uint32_t ways;              /* prototypes held (solver PROTOTYPES), 0 before adaptation */
    float *theta, *theta0, *backup, *rates, *grad, *frozen, *norm;
    float *x0, *ys, *d0, *d1, *protos, *jac;
    double *hess, *rhs;
    float *w[ME_MAX_LAYERS], *b[ME_MAX_LAYERS]; /* parameters per layer: adapted ones point into theta */
    float *wt[ME_MAX_LAYERS];                   /* transposed weights (in, out) of wide layers, or NULL */
    float *act[ME_MAX_LAYERS];                  /* layer outputs (max_shots, out) */
    me_adapt_info last;                         /* of the last me_adapt (or the state read) */
    struct me_control_state {                   /* control models only (NULL pointers otherwise) */
        float *low, *high, *target, *mid;       /* (A), (A), (S), (A) */
        double *q, *r;                          /* (S), (A) cost weights */
        uint32_t *wrapped;                      /* (S) 1 for an angle dim */
        double *costs;                          /* (N) of the current round */
        uint32_t *order;                        /* (2 N) CEM: stable sort of the candidates, and its scratch */
        float *roll, *acts;                     /* (rows, S) rolled-out states, (rows, A) their actions */
        float *mean, *wmean, *wstd, *nmean, *nstd, *elite, *seq; /* (H, A) each; elite (E, H, A) */
        float *win_x, *win_y;                   /* (2 M, S + A), (2 M, S): the window written twice (a ring) */
        float *prev;                            /* (n_theta) the state a failed re-adaptation restores */
        uint64_t calls, observed;               /* plan calls since the reset; transitions since the reset */
        uint32_t head;                          /* next window slot */
        int planned;                            /* whether seq / cost hold a plan */
        double cost;
    } ctl;
};

#ifdef __cplusplus
}
#endif
#endif
