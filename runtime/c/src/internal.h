/* Internal interfaces of the metaedge C runtime: one section per source file. */
#ifndef METAEDGE_INTERNAL_H
#define METAEDGE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "metaedge.h"

/* model.mebin versions 1 and 2 have no damping field: the floor they were exported with
 * (sdk/learners/newton.py MIN_DAMPING at the time) */
#define ME_LEGACY_MIN_DAMPING 1e-6f

/* bytes.c: little-endian reads and writes at any alignment */
uint16_t me_read_u16(const unsigned char *p);
uint32_t me_read_u32(const unsigned char *p);
void me_read_f32(float *dst, const unsigned char *src, uint32_t count);
void me_write_u16(unsigned char *p, uint16_t v);
void me_write_u32(unsigned char *p, uint32_t v);
void me_write_f32(unsigned char *dst, const float *src, uint32_t count);
int me_all_finite(const float *v, size_t count);

/* layers.c: plain forward/backward pairs over row-major batches of n samples.
 * Backward functions overwrite dx, dw and db; NULL skips an output. */
float me_dot(const float *a, const float *b, uint32_t len);
/* c (m, p) = a (m, k) b (k, p) [+ bias], a element (r, q) at a[r * ars + q * aks]; then ReLU (relu != 0) or
 * zero where mask (m, p) <= 0 (mask non-NULL) */
void me_matmul(float *c, const float *a, uint32_t ars, uint32_t aks, const float *b, const float *bias,
               const float *mask, int relu, uint32_t m, uint32_t k, uint32_t p);
/* dst (cols, rows) = src (rows, cols)^T */
void me_transpose(float *dst, const float *src, uint32_t rows, uint32_t cols);
void me_dense_forward(float *y, const float *x, const float *w, const float *b, uint32_t n, uint32_t in,
                      uint32_t out);
/* the same with the weight given transposed, wt (in, out): the blocked kernel, no reduction */
void me_dense_forward_t(float *y, const float *x, const float *wt, const float *b, uint32_t n, uint32_t in,
                        uint32_t out);
void me_dense_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, uint32_t n,
                       uint32_t in, uint32_t out);
/* dw (out, in) = dy^T x and db (out) = column sums of dy, overwritten */
void me_dense_weight_grad(float *dw, const float *dy, const float *x, uint32_t n, uint32_t in, uint32_t out);
void me_bias_grad(float *db, const float *dy, uint32_t n, uint32_t out);
void me_relu_forward(float *y, const float *x, size_t len);
void me_relu_backward(float *dx, const float *dy, const float *y, size_t len);
void me_tanh_forward(float *y, const float *x, size_t len);
void me_tanh_backward(float *dx, const float *dy, const float *y, size_t len);
void me_sigmoid_forward(float *y, const float *x, size_t len);
void me_sigmoid_backward(float *dx, const float *dy, const float *y, size_t len);

/* conv1d.c: forward only (prototype embeddings), rows of (channels, length) */
/* y (n, cout, len) = conv(x (n, cin, len)) with w (cout, cin, 3), zero padding 1, then ReLU when relu != 0 */
void me_conv1d_forward(float *y, const float *x, const float *w, const float *b, uint32_t n, uint32_t cin,
                       uint32_t cout, uint32_t len, int relu);
/* y (n, channels, len / 2) = max over pairs of x (n, channels, len) */
void me_maxpool1d_forward(float *y, const float *x, uint32_t n, uint32_t channels, uint32_t len);

/* losses.c: pred/logits (n, d); labels hold class numbers (already checked to be in range) */
float me_mse_forward(const float *pred, const float *target, size_t len);
void me_mse_backward(float *dpred, const float *pred, const float *target, size_t len);
float me_cross_entropy_forward(const float *logits, const float *labels, uint32_t n, uint32_t classes);
void me_cross_entropy_backward(float *dlogits, const float *logits, const float *labels, uint32_t n,
                               uint32_t classes);

/* network.c: the layer table as one function of the session's parameters */
/* forward n rows of s->x0 (n <= me_session_rows(s)) into s->act[]; returns the output rows */
const float *me_network_forward(me_session *s, uint32_t n);
/* gradient of the adapted parameters for rows [row0, row0 + n) given d output (n, out_dim) in dout (which
 * may be s->d0 or s->d1 and is clobbered); written into g (theta layout: every adapted entry overwritten) */
void me_network_backward(me_session *s, uint32_t row0, uint32_t n, float *dout, float *g);
/* support loss of the current output rows against s->ys (n rows); 0 on success */
float me_network_loss(const me_session *s, const float *out, uint32_t n);
/* d loss / d output into dout (n, out_dim) */
void me_network_loss_backward(const me_session *s, const float *out, uint32_t n, float *dout);

/* session.c */
/* whether layer l writes its own output buffer (activations run in place on the previous one) */
int me_owns_output(const me_model *m, uint32_t l);
/* whether layer l keeps a transposed weight copy for its forward pass */
int me_uses_transposed(const me_layer *L);
/* refresh the transposed copies of the adapted weights (all weights: all != 0) after theta changed */
void me_refresh_transposed(me_session *s, int all);
/* whether a session reads the frozen weights straight from the model buffer (prototype models on a
 * little-endian target whose parameter section is float-aligned) instead of copying them into the arena */
int me_weights_in_place(const me_model *m);
/* rows of x0 and of every activation buffer: max_shots, or 1 for prototype sessions (one sample at a time) */
uint32_t me_session_rows(const me_session *s);
/* the session's last-adapt info back to unknown (no steps, NaN losses) */
void me_forget_adapt_info(me_session *s);
/* check and normalise n inputs into s->x0 */
me_status me_load_inputs(me_session *s, const float *x, uint32_t n);
/* check and normalise n targets (or labels) into s->ys; classes: upper bound for labels (0: any) */
me_status me_load_targets(me_session *s, const float *y, uint32_t n, uint32_t classes);

/* adapt.c, newton.c, prototypes.c: the three solvers */
me_status me_adapt_sgd(me_session *s, uint32_t n, uint32_t steps, uint32_t flags, me_adapt_info *info);
me_status me_adapt_gauss_newton(me_session *s, uint32_t n, uint32_t steps, uint32_t flags, me_adapt_info *info);
/* J (n * out_dim, p) = d outputs / d theta of the n rows of the last forward pass, one backward pass per output */
void me_jacobian_rows(me_session *s, uint32_t n, float *jac);
/* s->hess (lower triangle) = J^T J + diag(exp(rates) + min_damping) over the first `rows` rows of s->jac */
void me_normal_matrix(me_session *s, uint32_t rows);
/* intervals.c: the fitted interval multiplier at `level` (linear between fitted levels); -1 outside them */
float me_interval_factor(const me_model *m, float level);
/* Cholesky factorisation of the symmetric positive definite a (p, p) in place (lower triangle), then solve
 * a x = b in place of b; returns 0, or -1 when a is not positive definite */
int me_cholesky_solve(double *a, double *b, uint32_t p);
/* a (p, p) = L L^T in place (L in the lower triangle; only the lower triangle of a is read); 0 on success */
int me_cholesky_factor(double *a, uint32_t p);
/* b = L^-1 b for the factor L of me_cholesky_factor */
void me_cholesky_lower_solve(const double *l, double *b, uint32_t p);
/* check x (n, in_dim) and the labels y (n), then embed one sample at a time into the class sums */
me_status me_prototypes_build(me_session *s, const float *x, const float *y, uint32_t n);
/* logits (n, ways) = minus squared Euclidean distance of the embeddings z (n, dim) to the prototypes */
void me_prototype_logits(float *logits, const float *z, const float *protos, uint32_t n, uint32_t ways,
                         uint32_t dim);

/* control.c: the control section (format 5) and the planner's part of a session's arena */
/* parse and validate the section at off (4-aligned, inside total) into m->ctl; sets m->off_control */
me_status me_control_parse(me_model *m, uint32_t off, uint32_t total);
/* the shots a session of m holds: max_shots, raised to the control window */
uint32_t me_control_shots(const me_model *m, uint32_t max_shots);
/* bytes of the planner's arena block for sessions of `rows` network rows (0 without a control section) */
uint64_t me_control_bytes(const me_model *m, uint32_t rows);
/* carve that block (16-byte aligned) into s->ctl, copy the section's arrays and reset the planner */
void me_control_carve(me_session *s, unsigned char *block, uint32_t rows);
/* output `counter` of splitmix64 started at seed (counter 0: the generator's first output) */
uint64_t me_splitmix64(uint64_t seed, uint64_t counter);
/* forget the window of transitions (me_reset) */
void me_control_forget(me_session *s);
/* theta back to theta0 and the adapt info unknown: me_reset without forgetting the window */
void me_theta_reset(me_session *s);

#endif
