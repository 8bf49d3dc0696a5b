"""Optimizer updates on the CPU: one loop over ONE flat buffer holding every parameter of the model.

Notation: P parameters in one flat float32 vector p, gradient g, step t (from 1), learning rate lr.
Adam:   g' = g + wd * p            (L2 weight decay, Adam)      or  p -= lr * wd * p  (decoupled, AdamW)
        m = b1 * m + (1 - b1) * g';   v = b2 * v + (1 - b2) * g'^2
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
SGD:    g' = g + wd * p;  buf = mu * buf + g';  step = g' + mu * buf (Nesterov) or buf;  p -= lr * step
Backward's end: every parameter's gradient g_k is added into its view of the flat gradient buffer,
        grad_k += g_k for k = 1..K, in one call (accumulate_grads): on the GPU one launch, not K.
"""
import math

from numba import njit


@njit(cache=True)
def _adam(p, g, m, v, lr, b1, b2, eps, bc1, bc2, wd, decoupled):
    for i in range(p.shape[0]):
        gi = g[i]
        if decoupled:
            p[i] -= lr * wd * p[i]
        else:
            gi += wd * p[i]
        m[i] = b1 * m[i] + (1.0 - b1) * gi
        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi
        p[i] -= lr * (m[i] / bc1) / (math.sqrt(v[i] / bc2) + eps)


@njit(cache=True)
def _sgd(p, g, buf, lr, mu, wd, nesterov):
    for i in range(p.shape[0]):
        gi = g[i] + wd * p[i]
        if mu != 0.0:
            buf[i] = mu * buf[i] + gi
            gi = gi + mu * buf[i] if nesterov else buf[i]
        p[i] -= lr * gi


def adam_update(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0, decoupled=False):
    """One Adam (or AdamW when decoupled) step on flat arrays p, g, m, v, in place."""
    _adam(p, g, m, v, lr, beta1, beta2, eps, 1.0 - beta1 ** step, 1.0 - beta2 ** step, weight_decay, decoupled)


def sgd_update(p, g, buf, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """One SGD step (momentum, Nesterov, L2 weight decay) on flat arrays p, g, buf, in place."""
    _sgd(p, g, buf, lr, momentum, weight_decay, nesterov)


def accumulate_grads(dsts, srcs):
    """dsts[k] += srcs[k] for every k, in place (the gradients a backward pass adds into parameters' .grad)."""
    for d, s in zip(dsts, srcs):
        d += s
