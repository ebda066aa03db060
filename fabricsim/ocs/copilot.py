"""MixNet-Copilot: predicting the next MoE layer's expert load (reference section 3.6).

The paper (Appendix B.1) predicts the load of MoE layer ``l`` from the load of layer ``l - 1``
of the *same* iteration, so that the regional OCS can be configured for layer ``l`` before its
gating is known. For every transition ``l - 1 -> l`` it keeps a *conditional probability matrix*
``P`` (``n x n``; ``n`` = experts, or EP ranks when the predictor works at rank level)::

    P[j, i] = Pr(a token goes to expert j in layer l | it went to expert i in layer l - 1)

so every column of ``P`` is a probability distribution (``P >= 0``, column sums 1) and the
prediction is ``y_l = P @ x_{l-1}`` with ``x`` the normalized load vector (sum 1). ``P`` is
fitted by weighted least squares over the ``window`` most recent observed iterations::

    min_P  sum_i w_i * || Y_i - P X_i ||^2     s.t.  P column-stochastic

(``X_i``, ``Y_i`` the normalized load vectors of layers ``l - 1`` and ``l`` in iteration ``i``).
``0 <= P <= 1`` follows from the simplex constraint on each column.

**Solver.** The paper uses scipy's SLSQP; fabricsim solves the same convex problem without
scipy, by FISTA (accelerated projected gradient) with the exact Euclidean projection of each
column onto the probability simplex (:func:`project_simplex`) - see
:func:`fit_column_stochastic`.

**Choices the paper leaves open** (documented defaults of :class:`CopilotPredictor`):

* ``window = 8`` iterations, weights ``w_i = decay ** age`` with ``decay = 0.7`` and ``age`` the
  iteration distance to the most recent observed iteration (0 for it). The oldest sample of a
  full window of consecutive iterations weighs 0.7**7 = 8 % of the newest: the fit follows the
  drift of the gating during training (paper Fig. 4a) while averaging over several iterations
  against micro-batch noise. With ``window >= n`` samples the problem is (generically) strictly
  convex and ``P`` is unique; fewer samples leave it under-determined and the solver returns the
  minimizer that its start, the prior, leads to.
* Prior / no data: the **identity** matrix, i.e. "a token stays on its expert", whose prediction
  is the previous layer's load unchanged - the paper's own fallback for the first layer(s) ("the
  topology is left unchanged from the previous layer", reference section 3.6). The identity is
  also the start of every fit.
"""

from __future__ import annotations

import math

import numpy as np

from fabricsim.errors import require

__all__ = ["CopilotPredictor", "fit_column_stochastic", "project_simplex", "objective",
           "stationarity_gap"]


# ---------------------------------------------------------------------------------------------
# simplex projection


def project_simplex(v) -> np.ndarray:
    """Euclidean projection of each column of a 2-D array (or of a 1-D vector) onto the
    probability simplex ``{p : p >= 0, sum(p) = 1}``.

    Sort-based algorithm (Held, Wolfe & Crowder 1974; Duchi et al. 2008): with ``u`` the column
    sorted in decreasing order and ``c`` its cumulative sums, ``rho`` is the largest (1-based)
    index with ``u[rho] > (c[rho] - 1) / rho``, ``theta = (c[rho] - 1) / rho`` and the projection
    is ``max(v - theta, 0)``. O(n log n) per column, vectorized over columns; float64 result of
    the same shape. Non-finite input is a :class:`ConfigError`.
    """
    a = np.asarray(v, dtype=np.float64)
    require(a.ndim in (1, 2) and a.size > 0 and a.shape[0] > 0, "copilot.project_simplex",
            f"needs a non-empty 1-D vector or 2-D array, got shape {a.shape}")
    require(bool(np.all(np.isfinite(a))), "copilot.project_simplex", "values must be finite")
    col = a.reshape(a.shape[0], -1)
    n = col.shape[0]
    u = -np.sort(-col, axis=0)                                   # each column descending
    css = np.cumsum(u, axis=0) - 1.0
    idx = np.arange(1, n + 1, dtype=np.float64)[:, None]
    cond = u - css / idx > 0.0                                   # true on a prefix of rows
    rho = np.count_nonzero(cond, axis=0)                         # >= 1 always (first row holds)
    theta = css[rho - 1, np.arange(col.shape[1])] / rho
    out = np.maximum(col - theta[None, :], 0.0)
    return out.reshape(a.shape)


# ---------------------------------------------------------------------------------------------
# constrained weighted least squares


def _check_samples(X, Y, weights):
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    require(X.ndim == 2 and X.shape[0] >= 1 and X.shape[1] >= 1, "copilot.X",
            f"must be a 2-D array [k samples, n] with k, n >= 1, got shape {X.shape}")
    require(Y.shape == X.shape, "copilot.Y", f"must have the shape of X {X.shape}, got {Y.shape}")
    require(w.shape == (X.shape[0],), "copilot.weights",
            f"must be a vector of {X.shape[0]} weights (one per sample), got shape {w.shape}")
    for name, arr in (("X", X), ("Y", Y), ("weights", w)):
        require(bool(np.all(np.isfinite(arr))), f"copilot.{name}", "values must be finite")
    require(bool(np.all(w >= 0.0)), "copilot.weights", "must be non-negative")
    return X, Y, w


def objective(P, X, Y, weights) -> float:
    """``sum_i w_i * ||Y_i - P X_i||^2`` (rows of ``X``, ``Y`` are the samples)."""
    X, Y, w = _check_samples(X, Y, weights)
    r = Y - X @ np.asarray(P, dtype=np.float64).T
    return float(np.sum(w * np.sum(r * r, axis=1)))


def _gram(X, Y, w):
    A = (X.T * w) @ X              # sum_i w_i x_i x_i^T
    B = (Y.T * w) @ X              # sum_i w_i y_i x_i^T
    return A, B


def _fw_gap(P, G):
    """Frank-Wolfe gap ``max_S <G, P - S>`` over column-stochastic ``S``: an upper bound on
    ``f(P) - min f`` for convex ``f`` with gradient ``G`` at ``P`` (and 0 exactly at optima)."""
    return float(np.sum(G * P) - np.sum(G.min(axis=0)))


def stationarity_gap(P, X, Y, weights) -> float:
    """Certificate of optimality of a column-stochastic ``P``: the Frank-Wolfe gap
    ``sum_columns (<g_c, p_c> - min(g_c))`` of the gradient ``g = 2 (P A - B)``, an upper bound on
    ``objective(P) - min objective`` (convexity) that is 0 exactly at a minimizer."""
    X, Y, w = _check_samples(X, Y, weights)
    A, B = _gram(X, Y, w)
    P = np.asarray(P, dtype=np.float64)
    return _fw_gap(P, 2.0 * (P @ A - B))


def fit_column_stochastic(X, Y, weights, iters: int = 200, *, init=None,
                          tol: float = 1e-12) -> np.ndarray:
    """Solve ``min_P sum_i w_i ||Y_i - P X_i||^2`` over column-stochastic ``P`` (``P >= 0``,
    every column sums to 1; hence also ``P <= 1``).

    ``X``, ``Y``: float[k, n], one sample per row; ``weights``: float[k] >= 0. Returns
    float64[n, n] with ``P[j, i]`` the weight of input coordinate ``i`` in output ``j``.

    **Method.** With ``A = sum w_i x_i x_i^T`` and ``B = sum w_i y_i x_i^T`` the objective is
    ``tr(P A P^T) - 2 tr(P B^T) + const``, its gradient ``2 (P A - B)`` is Lipschitz with
    ``L = lambda_max(2 A)``. FISTA (Beck & Teboulle 2009) takes ``iters`` steps of length ``1 / L``
    from the extrapolated point, each followed by the exact projection of every column onto the
    simplex (:func:`project_simplex`), with the gradient-based adaptive restart of O'Donoghue &
    Candes (2015) (momentum reset when it points uphill).

    **Convergence.** Every iterate is feasible. Without restarts FISTA guarantees
    ``f(P_t) - f* <= 2 L ||P_0 - P*||_F^2 / (t + 1)^2 <= 4 n L / (t + 1)^2`` (two column-
    stochastic matrices differ by at most ``sqrt(2 n)`` in Frobenius norm); restarting keeps
    this rate in practice and gives linear convergence when ``A`` is positive definite (``k >= n``
    samples in general position). Iteration stops early once the Frank-Wolfe gap
    (:func:`stationarity_gap`, an upper bound on ``f(P) - f*``) is ``<= tol * (1 + f(P))`` (checked
    every 10 steps); the tolerance is on the objective, so ``P`` itself is accurate only to about
    ``sqrt(gap / lambda_min(A))``. Normalized load vectors are close to uniform, so ``A`` is
    ill-conditioned and 200 steps are not always enough: on random problems (n <= 8, k <= 11,
    Dirichlet loads, some near-uniform) the default 200 steps ended up to 2e-5 above SLSQP's
    optimal objective and 1000 steps matched it (to 1e-15). The predictor's accuracy is
    insensitive to these last digits; raise ``iters`` for tighter fits.

    ``init`` (default identity) is the start; when the problem is under-determined (fewer than
    ``n`` informative samples) the result is the minimizer that FISTA reaches from it. All
    weights zero (or all ``X`` zero) returns the projection of ``init``. Deterministic: plain
    NumPy arithmetic in a fixed order, no randomness.
    """
    X, Y, w = _check_samples(X, Y, weights)
    n = X.shape[1]
    require(isinstance(iters, (int, np.integer)) and not isinstance(iters, bool) and iters >= 0,
            "copilot.iters", f"must be an integer >= 0, got {iters!r}")
    require(isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0.0, "copilot.tol",
            f"must be a finite number >= 0, got {tol!r}")
    if init is None:
        P = np.eye(n)
    else:
        P0 = np.asarray(init, dtype=np.float64)
        require(P0.shape == (n, n), "copilot.init", f"must have shape {(n, n)}, got {P0.shape}")
        P = project_simplex(P0)
    k = X.shape[0]
    A, B = _gram(X, Y, w)
    if k < n:                      # same non-zero spectrum, smaller matrix; P A in O(n^2 k)
        L = 2.0 * float(np.linalg.eigvalsh((X * w[:, None]) @ X.T)[-1])
        Xw = X * w[:, None]

        def times_a(M):
            return (M @ X.T) @ Xw
    else:
        L = 2.0 * float(np.linalg.eigvalsh(A)[-1])

        def times_a(M):
            return M @ A
    if not L > 0.0:
        return P
    c0 = float(np.sum(w * np.sum(Y * Y, axis=1)))       # f(P) = tr(P A P^T) - 2 tr(P B^T) + c0
    Z, t = P.copy(), 1.0
    for it in range(int(iters)):
        G = 2.0 * (times_a(Z) - B)
        Pn = project_simplex(Z - G / L)
        if np.sum((Z - Pn) * (Pn - P)) > 0.0:           # momentum points uphill: restart
            t = 1.0
        tn = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        Z = Pn + ((t - 1.0) / tn) * (Pn - P)
        P, t = Pn, tn
        if it % 10 == 9:
            PA = times_a(P)
            GP = 2.0 * (PA - B)
            f = float(np.sum(PA * P) - 2.0 * np.sum(P * B) + c0)
            if _fw_gap(P, GP) <= tol * (1.0 + abs(f)):
                break
    return P


# ---------------------------------------------------------------------------------------------
# the predictor


def _int(value, field, minimum):
    require(isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            and value >= minimum, field, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _load_vector(v, n, field):
    a = np.asarray(v, dtype=np.float64)
    require(a.shape == (n,), field, f"must be a load vector of length {n}, got shape {a.shape}")
    require(bool(np.all(np.isfinite(a))) and bool(np.all(a >= 0.0)), field,
            "loads must be finite and non-negative")
    return a


class CopilotPredictor:
    """Per-layer conditional-probability predictor of MoE layer loads (MixNet-Copilot).

    ``n``: size of a load vector (experts, or EP ranks); ``layers``: MoE layers per iteration
    (transitions ``l - 1 -> l`` exist for ``l = 1 .. layers - 1``); ``window`` (default 8):
    iterations kept; ``decay`` (default 0.7, in (0, 1]): sample weight ``decay ** age``, ``age`` =
    most recent observed iteration - the sample's iteration; ``iters`` (default 200): FISTA steps
    per fit (see :func:`fit_column_stochastic`). Why these defaults: module docstring.

    Usage per iteration: during the forward pass, once layer ``l - 1``'s gating is known, call
    :meth:`predict` (or :meth:`predict_matrix`) for layer ``l`` to choose its topology; after the
    iteration, :meth:`observe` its actual loads. Fits are cached per layer until the next
    observation. Deterministic.
    """

    def __init__(self, n: int, layers: int, *, window: int = 8, decay: float = 0.7,
                 iters: int = 200):
        self.n = _int(n, "copilot.n", 1)
        self.layers = _int(layers, "copilot.layers", 1)
        self.window = _int(window, "copilot.window", 1)
        require(isinstance(decay, (int, float, np.floating)) and not isinstance(decay, bool)
                and 0.0 < float(decay) <= 1.0, "copilot.decay",
                f"must be a number in (0, 1], got {decay!r}")
        self.decay = float(decay)
        self.iters = _int(iters, "copilot.iters", 0)
        self._obs: dict[int, np.ndarray] = {}      # iteration -> float64[layers, n] (normalized)
        self._fits: dict[int, np.ndarray] = {}

    # -- data ---------------------------------------------------------------------------------

    @property
    def iterations(self) -> list[int]:
        """Iterations in the window, oldest first."""
        return sorted(self._obs)

    def observe(self, iteration: int, layer_loads) -> None:
        """Add the actual per-layer loads ``[layers, n]`` (non-negative, e.g. tokens per expert or
        per EP rank) of a finished iteration. Each layer's vector is normalized to sum 1; a layer
        with zero load carries no information and is left out of the transitions it takes part
        in. Observing an iteration again replaces it. Only the ``window`` most recent iterations
        (by number) are kept."""
        it = _int(iteration, "copilot.iteration", 0)
        a = np.asarray(layer_loads, dtype=np.float64)
        require(a.shape == (self.layers, self.n), "copilot.layer_loads",
                f"must have shape [layers, n] = {(self.layers, self.n)}, got {a.shape}")
        require(bool(np.all(np.isfinite(a))) and bool(np.all(a >= 0.0)), "copilot.layer_loads",
                "loads must be finite and non-negative")
        tot = a.sum(axis=1, keepdims=True)
        self._obs[it] = np.divide(a, tot, out=np.zeros_like(a), where=tot > 0.0)
        for old in sorted(self._obs)[:-self.window]:
            del self._obs[old]
        self._fits.clear()

    def samples(self, layer: int):
        """``(X, Y, w)`` of transition ``layer - 1 -> layer``: float[k, n] normalized loads of
        layer - 1 and layer, oldest first, and their weights ``decay ** age``."""
        lay = self._layer(layer)
        its = [i for i in sorted(self._obs)
               if self._obs[i][lay - 1].sum() > 0.0 and self._obs[i][lay].sum() > 0.0]
        if not its:
            empty = np.zeros((0, self.n))
            return empty, empty.copy(), np.zeros(0)
        X = np.stack([self._obs[i][lay - 1] for i in its])
        Y = np.stack([self._obs[i][lay] for i in its])
        last = max(self._obs)
        w = np.array([self.decay ** (last - i) for i in its])
        return X, Y, w

    def _layer(self, layer) -> int:
        lay = _int(layer, "copilot.layer", 0)
        require(1 <= lay < self.layers, "copilot.layer",
                f"must be in [1, {self.layers}) (layer 0 has no previous layer), got {layer!r}")
        return lay

    # -- fitting and prediction ---------------------------------------------------------------

    def fit(self, layer: int) -> np.ndarray:
        """float64[n, n], column-stochastic: ``P`` of transition ``layer - 1 -> layer`` fitted on
        the window (cached until the next :meth:`observe`). With no usable sample it is the prior,
        the identity (prediction = previous layer's load, the paper's "unchanged" fallback).
        Returns a copy."""
        lay = self._layer(layer)
        P = self._fits.get(lay)
        if P is None:
            X, Y, w = self.samples(lay)
            P = np.eye(self.n) if X.shape[0] == 0 else fit_column_stochastic(X, Y, w, self.iters)
            P.setflags(write=False)
            self._fits[lay] = P
        return P.copy()

    def _P(self, layer) -> np.ndarray:
        self.fit(layer)
        return self._fits[self._layer(layer)]

    def predict(self, layer: int, prev_load) -> np.ndarray:
        """Predicted float64[n] load of ``layer`` given the actual load of ``layer - 1`` in the
        current iteration: ``P @ prev_load``; the total equals ``prev_load``'s (the token count
        does not change between layers; exact up to rounding, since ``P``'s columns sum to 1)."""
        P = self._P(layer)
        x = _load_vector(prev_load, self.n, "copilot.prev_load")
        return P @ x

    def predict_matrix(self, layer: int, prev_rank_tokens) -> np.ndarray:
        """Predicted token matrix of ``layer`` from the actual one of ``layer - 1``.

        ``prev_rank_tokens``: float/int[m, n], rows = source rank, columns = destination (the
        ``n`` ranks or experts the predictor works on; ``m`` is usually ``n`` = ep). After layer
        ``l - 1`` the tokens return to their source rank, so the tokens that source ``s`` sent to
        destination ``i`` are routed in layer ``l`` to ``j`` with probability ``P[j, i]``,
        independently of ``s``::

            R_l[s, j] = sum_i P[j, i] * R_{l-1}[s, i]        i.e.   R_l = R_{l-1} @ P.T

        Each row keeps its total (a source rank sends the same number of token copies in every
        layer). float64[m, n]; used to choose the OCS topology of layer ``l`` before its actual
        demand is known."""
        P = self._P(layer)
        R = np.asarray(prev_rank_tokens, dtype=np.float64)
        require(R.ndim == 2 and R.shape[1] == self.n and R.shape[0] >= 1,
                "copilot.prev_rank_tokens",
                f"must be a 2-D matrix [sources, {self.n}] (columns = destinations), "
                f"got shape {R.shape}")
        require(bool(np.all(np.isfinite(R))) and bool(np.all(R >= 0.0)),
                "copilot.prev_rank_tokens", "token counts must be finite and non-negative")
        return R @ P.T

