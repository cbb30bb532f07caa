"""The population backtest kernel: every strategy over the same bars in one compiled pass.

Fill model (per strategy, bar t):

1. A target position decided at the close of bar t-1 fills at the open of bar t: buys at
   ``open * (1 + slippage)``, sells at ``open * (1 - slippage)``, each unit of position traded
   paying ``commission``. Positions are -1 (short), 0 (flat) or +1 (long), fully invested.
2. An open position with a stop (``stop_atr`` > 0) has a stop-loss ``stop_atr * ATR`` and a
   take-profit ``risk_reward * stop_atr * ATR`` from its entry price, ATR as of the decision.
   They are checked against the bar's low and high; when both are touched in one bar the stop
   fills first; a bar opening beyond a level fills at the open. After a stop or target exit the
   strategy re-enters on that side only once its entry condition has been false at a close.
3. The position is marked to the close; the bar's return is the equity growth over the bar.
4. At the close the family's rule decides the next target. Entries need the bar's hour inside
   the time-of-day window and the EWMA volatility inside [vol_min, vol_max]; exits do not. An
   infinite bound is no bound: a band open on both sides admits entries from the first bar,
   before the volatility is known.
5. Entries are state-based by default: a crossover is long whenever its spread (fast - slow)
   is above ``entry * slow`` at a close. With ``entry_on_cross`` a crossover enters only at
   the close where the spread crosses its level, strictly on the other side at the previous
   close (``backtesting.lib.crossover``: ``a[-2] < b[-2] and a[-1] > b[-1]``), shorts
   mirrored below ``-entry * slow``; a cross the window or filter refuses is missed, not
   deferred, and after a purge or a stop the next entry waits for the next cross. Exits stay
   state-based (the spread below ``exit * slow`` closes a long), and a reversal is an entry.
6. A position still open after the last bar counts as a trade closed at the last close, with
   no exit costs (nothing is traded); its bars are in the returns either way.

Walk-forward folds: at the first bar of every fold after the first, positions are closed at the
open (purging trades that would span the boundary) and no entry is taken for ``embargo`` bars
(the embargo: nothing learnt from one fold's last bars trades into the next). Statistics are
accumulated twice: over every bar, and over the out-of-sample bars (every fold after the first;
its embargo bars hold no position); a trade is out of sample when it was opened there, so the
in-sample trade closed at the first out-of-sample open is not. Returns are stored so tail
quantiles are read exactly.
"""

from __future__ import annotations

import numba
import numpy as np

# Family codes (the values of qtmesh.base.genome.StrategyFamily).
MA_CROSSOVER, MEAN_REVERSION, BREAKOUT, Q_LEARNING = 1, 2, 3, 4

# Parameter columns.
P_ALLOW_SHORT = 0
P_ENTRY = 1
P_EXIT = 2
P_VOL_MIN = 3
P_VOL_MAX = 4
P_SESSION_START = 5
P_SESSION_HOURS = 6
P_STOP_ATR = 7
P_RISK_REWARD = 8
P_RSI_BAND = 9
P_LEARNING_RATE = 10
P_EXPLORATION = 11
P_DISCOUNT = 12
P_ENTRY_ON_CROSS = 13
PARAMETER_COUNT = 14

# Indicator row columns: four family rows, then the ATR row.
ROW_COUNT = 5

# Accumulator columns, per statistics set.
A_N = 0
A_SUM = 1
A_SUM2 = 2
A_SUM3 = 3
A_SUM4 = 4
A_DOWN2 = 5
A_GAINS = 6
A_LOSSES = 7
A_EQUITY = 8
A_PEAK = 9
A_MAX_DD = 10
A_DD_LEN = 11
A_MAX_DD_LEN = 12
A_ULCER = 13
A_ST_Y = 14
A_ST_YY = 15
A_ST_TY = 16
A_CUM_LOG = 17
A_EXPOSED = 18
A_TURNOVER = 19
A_TRADES = 20
A_WINS = 21
A_WIN_SUM = 22
A_LOSS_SUM = 23
A_BEST = 24
A_WORST = 25
A_HOLDING = 26
A_MIN = 27
A_MAX = 28
A_Q05 = 29
A_Q95 = 30
A_CVAR = 31
ACCUMULATOR_COUNT = 32

ALL_BARS, OUT_OF_SAMPLE = 0, 1
Q_STATES, Q_ACTIONS = 18, 3


@numba.njit(cache=True, inline="always")
def _record_trade(acc: np.ndarray, result: float, holding: float) -> None:
    acc[A_TRADES] += 1.0
    if result > 0.0:
        acc[A_WINS] += 1.0
        acc[A_WIN_SUM] += result
    else:
        acc[A_LOSS_SUM] += result
    if acc[A_TRADES] == 1.0 or result > acc[A_BEST]:
        acc[A_BEST] = result
    if acc[A_TRADES] == 1.0 or result < acc[A_WORST]:
        acc[A_WORST] = result
    acc[A_HOLDING] += holding


@numba.njit(cache=True, inline="always")
def _log1p(r: float) -> float:
    """log(1 + r); a degree-8 series below 2^-7, exact to a few ulps, is much cheaper than
    libm's log1p on the small per-bar returns that dominate."""
    if abs(r) < 0.0078125:
        return r * (
            1.0
            + r
            * (
                -0.5
                + r
                * (1.0 / 3 + r * (-0.25 + r * (0.2 + r * (-1.0 / 6 + r * (1.0 / 7 - r * 0.125)))))
            )
        )
    return np.log1p(r)


# Fused multiply-adds ("contract") for the many running sums: fewer instructions per bar and
# each rounded once; nothing else of fast-math (NaN and infinity keep their meaning).
@numba.njit(cache=True, fastmath={"contract"})
def _statistics(returns: np.ndarray, split: int, every: np.ndarray, oos: np.ndarray) -> None:
    """Return statistics of all bars (``every``) and of bars from ``split`` on (``oos``), in one
    branch-free pass: bars before ``split`` feed ``every`` directly; later bars feed ``oos`` and
    continue the drawdown of ``every``, whose sums are then the sums of both parts."""
    n_total = returns.shape[0]
    for part in range(2):
        first = 0 if part == 0 else split
        stop = split if part == 0 else n_total
        acc = every if part == 0 else oos
        total = 0.0
        sum2 = 0.0
        sum3 = 0.0
        sum4 = 0.0
        down2 = 0.0
        gains = 0.0
        losses = 0.0
        equity = 1.0
        peak = 1.0
        max_dd = 0.0
        dd_len = 0.0
        max_dd_len = 0.0
        ulcer = 0.0
        y = 0.0
        st_y = 0.0
        st_yy = 0.0
        st_ty = 0.0
        low = np.inf
        high = -np.inf
        inverse_peak = 1.0
        # The all-bars drawdown carried through the out-of-sample part. All-bars equity is
        # E0 x this part's, its peak max(P0, E0 x this part's peak), so its drawdown is
        # max(1 - (E0 / P0) x equity, this part's drawdown): no second equity curve needed.
        all_ratio = every[A_EQUITY] / every[A_PEAK] if part == 1 else 1.0
        all_max_dd = every[A_MAX_DD] if part == 1 else 0.0
        all_dd_len = every[A_DD_LEN] if part == 1 else 0.0
        all_max_dd_len = every[A_MAX_DD_LEN] if part == 1 else 0.0
        all_ulcer = every[A_ULCER] if part == 1 else 0.0
        index = 0.0
        for t in range(first, stop):
            r = returns[t]
            r2 = r * r
            total += r
            sum2 += r2
            sum3 += r2 * r
            sum4 += r2 * r2
            negative = min(r, 0.0)
            down2 += negative * negative
            losses += negative
            gains += max(r, 0.0)
            low = min(low, r)
            high = max(high, r)
            growth = 1.0 + r
            equity *= growth
            # A division only at a new peak: equity / peak on every bar costs more than the
            # rest of the drawdown bookkeeping.
            if equity >= peak:
                peak = equity
                inverse_peak = 1.0 / equity
                drawdown = 0.0
            else:
                drawdown = 1.0 - equity * inverse_peak
            ulcer += drawdown * drawdown
            max_dd = max(max_dd, drawdown)
            dd_len = dd_len + 1.0 if drawdown > 0.0 else 0.0
            max_dd_len = max(max_dd_len, dd_len)
            if part == 1:
                all_drawdown = max(1.0 - all_ratio * equity, drawdown)
                all_ulcer += all_drawdown * all_drawdown
                all_max_dd = max(all_max_dd, all_drawdown)
                all_dd_len = all_dd_len + 1.0 if all_drawdown > 0.0 else 0.0
                all_max_dd_len = max(all_max_dd_len, all_dd_len)
            if r != 0.0:
                y += _log1p(r)
            st_y += y
            st_yy += y * y
            st_ty += index * y
            index += 1.0
        acc[A_N] = index
        acc[A_SUM] = total
        acc[A_SUM2] = sum2
        acc[A_SUM3] = sum3
        acc[A_SUM4] = sum4
        acc[A_DOWN2] = down2
        acc[A_GAINS] = gains
        acc[A_LOSSES] = losses
        acc[A_EQUITY] = equity
        acc[A_PEAK] = peak
        acc[A_MAX_DD] = max_dd
        acc[A_DD_LEN] = dd_len
        acc[A_MAX_DD_LEN] = max_dd_len
        acc[A_ULCER] = ulcer
        acc[A_ST_Y] = st_y
        acc[A_ST_YY] = st_yy
        acc[A_ST_TY] = st_ty
        acc[A_CUM_LOG] = y
        acc[A_MIN] = low
        acc[A_MAX] = high
        if part == 1:
            # Extend every's sums with the out-of-sample part, shifting its index and log level.
            m = index
            n0 = every[A_N]
            y0 = every[A_CUM_LOG]
            st_t = m * (m - 1.0) / 2.0
            every[A_ST_TY] += n0 * m * y0 + n0 * st_y + y0 * st_t + st_ty
            every[A_ST_YY] += m * y0 * y0 + 2.0 * y0 * st_y + st_yy
            every[A_ST_Y] += m * y0 + st_y
            every[A_CUM_LOG] = y0 + y
            every[A_N] = n0 + m
            for column in (A_SUM, A_SUM2, A_SUM3, A_SUM4, A_DOWN2, A_GAINS, A_LOSSES):
                every[column] += acc[column]
            every[A_MIN] = min(every[A_MIN], low)
            every[A_MAX] = max(every[A_MAX], high)
            every[A_PEAK] = max(every[A_PEAK], every[A_EQUITY] * peak)
            every[A_EQUITY] *= equity
            every[A_MAX_DD] = all_max_dd
            every[A_DD_LEN] = all_dd_len
            every[A_MAX_DD_LEN] = all_max_dd_len
            every[A_ULCER] = all_ulcer


@numba.njit(cache=True, inline="always")
def _uniform(state: np.ndarray) -> float:
    """splitmix64: a counter-based generator, deterministic whatever thread runs it."""
    state[0] += np.uint64(0x9E3779B97F4A7C15)
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True)
def _simulate(
    family: int,
    p: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    d: np.ndarray,
    atr: np.ndarray,
    opens: np.ndarray,
    highs: np.ndarray,
    lows: np.ndarray,
    closes: np.ndarray,
    hours: np.ndarray,
    volatility: np.ndarray,
    fold_start: np.ndarray,
    embargo: int,
    commission: float,
    slippage: float,
    seed: np.uint64,
    returns: np.ndarray,
    positions: np.ndarray,
    acc: np.ndarray,
) -> None:
    n = closes.shape[0]
    split = fold_start[1]
    allow_short = p[P_ALLOW_SHORT] >= 0.5
    entry = p[P_ENTRY]
    exit_level = p[P_EXIT]
    vol_min = p[P_VOL_MIN]
    vol_max = p[P_VOL_MAX]
    session_start = p[P_SESSION_START]
    session_hours = p[P_SESSION_HOURS]
    stop_atr = p[P_STOP_ATR]
    risk_reward = p[P_RISK_REWARD]
    rsi_band = p[P_RSI_BAND]
    learning_rate = p[P_LEARNING_RATE]
    exploration = p[P_EXPLORATION]
    discount = p[P_DISCOUNT]
    entry_on_cross = p[P_ENTRY_ON_CROSS] >= 0.5

    acc[:, :] = 0.0
    exposed_all = 0.0
    exposed_oos = 0.0
    turnover_all = 0.0
    turnover_oos = 0.0

    q = np.zeros((Q_STATES, Q_ACTIONS))
    rng = np.empty(1, dtype=np.uint64)
    rng[0] = seed
    q_state = -1
    q_action = 0

    position = 0
    target = 0
    blocked = 0  # side that may not re-enter until its entry condition resets
    stop_level = 0.0
    take_level = 0.0
    trade_start_equity = 1.0
    trade_start_bar = 0
    equity = 1.0
    next_fold = 1
    embargo_until = -1
    returns[0] = 0.0
    positions[0] = 0

    for t in range(n):
        growth = 1.0
        traded = 0.0
        if t > 0:
            o = opens[t]
            h = highs[t]
            lo = lows[t]
            cl = closes[t]
            previous_close = closes[t - 1]
            if next_fold < fold_start.shape[0] and t == fold_start[next_fold]:
                target = 0
                embargo_until = t + embargo
                next_fold += 1
            reference = previous_close
            # 1. Fill the target at the open.
            if target != position:
                if position != 0:
                    fill = o * (1.0 - slippage * position)
                    growth *= 1.0 + position * (fill / previous_close - 1.0)
                    growth *= 1.0 - commission
                    result = equity * growth / trade_start_equity - 1.0
                    holding = float(t - trade_start_bar)
                    _record_trade(acc[ALL_BARS], result, holding)
                    # A trade belongs to the sample it was opened in: one opened in sample and
                    # closed at the fold boundary's open earned its result in sample.
                    if trade_start_bar >= split:
                        _record_trade(acc[OUT_OF_SAMPLE], result, holding)
                    traded += 1.0
                if target != 0:
                    trade_start_equity = equity * growth
                    trade_start_bar = t
                    reference = o * (1.0 + slippage * target)
                    growth *= 1.0 - commission
                    traded += 1.0
                    if stop_atr > 0.0:
                        distance = stop_atr * atr[t - 1]
                        if distance == distance:  # ATR known (not NaN)
                            stop_level = reference - target * distance
                            take_level = reference + target * risk_reward * distance
                        else:
                            stop_level = 0.0
                            take_level = 0.0
                position = target
            # 2. Stop-loss and take-profit inside the bar; the stop wins a tie.
            exited = False
            if position != 0 and stop_atr > 0.0 and stop_level > 0.0:
                fill = 0.0
                if position == 1:
                    if lo <= stop_level:
                        fill = min(o, stop_level) * (1.0 - slippage)
                    elif risk_reward > 0.0 and h >= take_level:
                        fill = max(o, take_level) * (1.0 - slippage)
                else:
                    if h >= stop_level:
                        fill = max(o, stop_level) * (1.0 + slippage)
                    elif risk_reward > 0.0 and lo <= take_level:
                        fill = min(o, take_level) * (1.0 + slippage)
                if fill > 0.0:
                    growth *= 1.0 + position * (fill / reference - 1.0)
                    growth *= 1.0 - commission
                    result = equity * growth / trade_start_equity - 1.0
                    holding = float(t - trade_start_bar + 1)
                    _record_trade(acc[ALL_BARS], result, holding)
                    if trade_start_bar >= split:
                        _record_trade(acc[OUT_OF_SAMPLE], result, holding)
                    traded += 1.0
                    blocked = position
                    position = 0
                    target = 0
                    exited = True
            # 3. Mark to the close.
            if position != 0 and not exited:
                growth *= 1.0 + position * (cl / reference - 1.0)
            equity *= growth
        r = growth - 1.0
        returns[t] = r
        positions[t] = position
        if position != 0:
            exposed_all += 1.0
            if t >= split:
                exposed_oos += 1.0
        if traded != 0.0:
            turnover_all += traded
            if t >= split:
                turnover_oos += traded

        # 4. Decide the next target at the close.
        if t == n - 1:
            break
        hour = hours[t]
        offset = hour - session_start
        if offset < 0.0:
            offset += 24.0
        vol = volatility[t]
        # An open side (an infinite bound) passes even while the volatility is unknown (NaN).
        may_enter = (
            t >= embargo_until
            and offset < session_hours
            and (vol_min == -np.inf or vol >= vol_min)
            and (vol_max == np.inf or vol <= vol_max)
        )
        long_entry = False
        long_exit = False
        short_entry = False
        short_exit = False
        if family == MA_CROSSOVER:
            gap = a[t] - b[t]
            slow = b[t]
            long_entry = gap > entry * slow
            long_exit = gap < exit_level * slow
            short_entry = gap < -entry * slow
            short_exit = gap > -exit_level * slow
            if entry_on_cross:
                # An entry on the cross event only (backtesting.lib.crossover: strictly on the
                # other side of the level at the previous close); at bar 0 nothing crossed.
                crossed_up = False
                crossed_down = False
                if t > 0:
                    previous_gap = a[t - 1] - b[t - 1]
                    previous_slow = b[t - 1]
                    crossed_up = previous_gap < entry * previous_slow
                    crossed_down = previous_gap > -entry * previous_slow
                long_entry = long_entry and crossed_up
                short_entry = short_entry and crossed_down
        elif family == MEAN_REVERSION:
            z = a[t]
            rsi = b[t]
            long_entry = z < -entry and rsi < rsi_band
            long_exit = z > -exit_level
            short_entry = z > entry and rsi > 100.0 - rsi_band
            short_exit = z < exit_level
        elif family == BREAKOUT:
            cl = closes[t]
            long_entry = cl > a[t] * (1.0 + entry)
            short_entry = cl < b[t] * (1.0 - entry)
            long_exit = cl < d[t] * (1.0 - exit_level)
            short_exit = cl > c[t] * (1.0 + exit_level)
        if (blocked == 1 and not long_entry) or (blocked == -1 and not short_entry):
            blocked = 0

        if family == Q_LEARNING:
            # State: trend (3) x RSI zone (3) x volatility above its slow reference (2).
            spread = (a[t] - b[t]) / b[t]
            rsi = c[t]
            state = -1
            if spread == spread and rsi == rsi and vol == vol and d[t] == d[t]:
                trend = 2 if spread > entry else (0 if spread < -entry else 1)
                zone = 0 if rsi < 30.0 else (2 if rsi > 70.0 else 1)
                state = trend * 6 + zone * 2 + (1 if vol > d[t] else 0)
            if q_state >= 0:
                # Reward: the bar's return of the action held, less a holding penalty.
                reward = r - exit_level * abs(position)
                best_next = 0.0
                if state >= 0:
                    best_next = max(q[state, 0], max(q[state, 1], q[state, 2]))
                q[q_state, q_action] += learning_rate * (
                    reward + discount * best_next - q[q_state, q_action]
                )
            action = 0
            if state >= 0:
                if _uniform(rng) < exploration:
                    action = int(_uniform(rng) * 3.0) % 3
                else:
                    best = q[state, 0]
                    if q[state, 1] > best:
                        best = q[state, 1]
                        action = 1
                    if q[state, 2] > best:
                        action = 2
            q_state = state
            q_action = action
            wanted = 1 if action == 1 else (-1 if action == 2 and allow_short else 0)
            if wanted != 0 and wanted != position and not may_enter:
                wanted = 0
            if wanted != 0 and wanted == blocked:
                wanted = 0
            target = wanted
            continue

        if position == 0:
            if may_enter and long_entry and blocked != 1:
                target = 1
            elif may_enter and allow_short and short_entry and blocked != -1:
                target = -1
            else:
                target = 0
        elif position == 1:
            if may_enter and allow_short and short_entry:
                target = -1
            elif long_exit:
                target = 0
            else:
                target = 1
        else:
            if may_enter and long_entry:
                target = 1
            elif short_exit:
                target = 0
            else:
                target = -1

    # An open position at the end counts as a trade closed at the last close.
    if position != 0:
        result = equity / trade_start_equity - 1.0
        holding = float(n - trade_start_bar)
        _record_trade(acc[ALL_BARS], result, holding)
        if trade_start_bar >= split:
            _record_trade(acc[OUT_OF_SAMPLE], result, holding)
    acc[ALL_BARS, A_EXPOSED] = exposed_all
    acc[OUT_OF_SAMPLE, A_EXPOSED] = exposed_oos
    acc[ALL_BARS, A_TURNOVER] = turnover_all
    acc[OUT_OF_SAMPLE, A_TURNOVER] = turnover_oos


@numba.njit(cache=True, inline="always")
def _cell(r: float, lowest: float, scale: float, top: int) -> int:
    """Histogram cell of a return: equal-width cells from ``lowest`` upwards, in value order."""
    return min(int((r - lowest) * scale), top)


@numba.njit(cache=True)
def _ranked(nonzero: np.ndarray, zeros: int, offset: int) -> float:
    """The value of rank ``offset`` among the sorted ``nonzero`` values plus ``zeros`` zeros."""
    negatives = np.searchsorted(nonzero, 0.0)
    if offset < negatives:
        return nonzero[offset]
    if offset < negatives + zeros:
        return 0.0
    return nonzero[offset - zeros]


@numba.njit(cache=True)
def _order_statistics(returns: np.ndarray, split: int, every: np.ndarray, oos: np.ndarray) -> None:
    """Exact 5th and 95th percentiles (numpy's linear interpolation) and the mean of the
    floor(0.05 (m - 1)) + 1 smallest returns, for all bars and for bars from ``split`` on.

    Two passes instead of a sort: a count of both sets per value cell, then a sort of only the
    values in the cells that hold the ranks needed, summing the cells wholly below the 5th
    percentile on the way. Exact zeros (flat bars, most bars of a strategy rarely in the
    market) are counted, never stored or sorted."""
    n = returns.shape[0]
    split = min(split, n)
    cells = 4096
    top = cells - 1
    lowest = min(every[A_MIN], 0.0)
    highest = max(every[A_MAX], 0.0)
    scale = cells / (highest - lowest) if highest > lowest else 0.0
    # Set 0 (every bar) is counted as bars before the split plus set 1 (bars from it on), so
    # each bar costs one increment. Zeros are counted in registers: incrementing one memory
    # cell per flat bar would serialise.
    counts = np.zeros((2, cells), dtype=np.int64)
    zeros_before = 0
    for t in range(split):
        r = returns[t]
        if r == 0.0:
            zeros_before += 1
        else:
            counts[0, _cell(r, lowest, scale, top)] += 1
    zeros_after = 0
    for t in range(split, n):
        r = returns[t]
        if r == 0.0:
            zeros_after += 1
        else:
            counts[1, _cell(r, lowest, scale, top)] += 1
    counts[0] += counts[1]
    zero_cell = _cell(0.0, lowest, scale, top)
    zeros = (zeros_before + zeros_after, zeros_after)
    sizes = (n, n - split)
    rank_cells = np.zeros((2, 4), dtype=np.int64)
    rank_offsets = np.zeros((2, 4), dtype=np.int64)
    # Bit k: set k needs this cell's values sorted. Bit 2 + k: the cell lies wholly in set k's tail.
    marks = np.zeros(cells, dtype=np.int8)
    for k in range(2):
        counts[k, zero_cell] += zeros[k]
        m = sizes[k]
        if m == 0:
            continue  # an empty set (no out-of-sample bars) has no ranks
        lo05 = int(np.floor(0.05 * (m - 1)))
        lo95 = int(np.floor(0.95 * (m - 1)))
        ranks = (lo05, min(lo05 + 1, m - 1), lo95, min(lo95 + 1, m - 1))
        seen = 0
        cell = 0
        for j in range(4):
            while seen + counts[k, cell] <= ranks[j]:
                seen += counts[k, cell]
                if j == 0:
                    marks[cell] |= 4 << k
                cell += 1
            rank_cells[k, j] = cell
            rank_offsets[k, j] = ranks[j] - seen
            marks[cell] |= 1 << k
    # Each set's rank cells get a segment of one buffer; the zero cell stores only its nonzeros.
    starts = np.zeros((2, cells), dtype=np.int64)
    slots = 0
    for k in range(2):
        if sizes[k] == 0:
            continue
        for j in range(4):
            cell = rank_cells[k, j]
            if j == 0 or cell != rank_cells[k, j - 1]:
                starts[k, cell] = slots
                slots += counts[k, cell] - (zeros[k] if cell == zero_cell else 0)
    buffer = np.empty(slots)
    filled = np.zeros((2, cells), dtype=np.int64)
    below = np.zeros(2)
    for t in range(n):
        r = returns[t]
        if r == 0.0:
            continue
        i = _cell(r, lowest, scale, top)
        flags = marks[i]
        if flags != 0:
            if flags & 1:
                buffer[starts[0, i] + filled[0, i]] = r
                filled[0, i] += 1
            if flags & 4:
                below[0] += r
            if t >= split:
                if flags & 2:
                    buffer[starts[1, i] + filled[1, i]] = r
                    filled[1, i] += 1
                if flags & 8:
                    below[1] += r
    for k in range(2):
        acc = every if k == 0 else oos
        m = sizes[k]
        if m == 0:
            continue
        found = np.empty(4)
        for j in range(4):
            cell = rank_cells[k, j]
            held = zeros[k] if cell == zero_cell else 0
            segment = buffer[starts[k, cell] : starts[k, cell] + counts[k, cell] - held]
            if j == 0 or cell != rank_cells[k, j - 1]:
                segment.sort()
            found[j] = _ranked(segment, held, rank_offsets[k, j])
        position05 = 0.05 * (m - 1)
        position95 = 0.95 * (m - 1)
        acc[A_Q05] = found[0] + (position05 - np.floor(position05)) * (found[1] - found[0])
        acc[A_Q95] = found[2] + (position95 - np.floor(position95)) * (found[3] - found[2])
        tail = below[k]
        cell = rank_cells[k, 0]
        held = zeros[k] if cell == zero_cell else 0
        first = buffer[starts[k, cell] : starts[k, cell] + counts[k, cell] - held]
        for j in range(rank_offsets[k, 0] + 1):
            tail += _ranked(first, held, j)
        acc[A_CVAR] = tail / (np.floor(position05) + 1.0)


@numba.njit(cache=True, parallel=True)
def simulate_population(
    families: np.ndarray,
    parameters: np.ndarray,
    rows: np.ndarray,
    table: np.ndarray,
    opens: np.ndarray,
    highs: np.ndarray,
    lows: np.ndarray,
    closes: np.ndarray,
    hours: np.ndarray,
    volatility: np.ndarray,
    fold_start: np.ndarray,
    embargo: int,
    commission: float,
    slippage: float,
    seeds: np.ndarray,
    returns: np.ndarray,
    positions: np.ndarray,
    accumulators: np.ndarray,
) -> None:
    """Backtests strategy s = 0..S-1 into ``returns[s]``, ``positions[s]`` (held at each close:
    -1, 0 or 1) and ``accumulators[s, set, column]``."""
    split = fold_start[1]
    for s in numba.prange(families.shape[0]):
        r = rows[s]
        _simulate(
            families[s],
            parameters[s],
            table[r[0]],
            table[r[1]],
            table[r[2]],
            table[r[3]],
            table[r[4]],
            opens,
            highs,
            lows,
            closes,
            hours,
            volatility,
            fold_start,
            embargo,
            commission,
            slippage,
            seeds[s],
            returns[s],
            positions[s],
            accumulators[s],
        )
        _statistics(returns[s], split, accumulators[s, ALL_BARS], accumulators[s, OUT_OF_SAMPLE])
        _order_statistics(
            returns[s], split, accumulators[s, ALL_BARS], accumulators[s, OUT_OF_SAMPLE]
        )


def return_statistics(returns: np.ndarray) -> np.ndarray:
    """(2, ACCUMULATOR_COUNT) accumulators of a return series that is no strategy's run (a
    benchmark such as buy and hold): every return statistic, no trades or exposure. Both sets
    hold every bar."""
    returns = np.ascontiguousarray(returns, dtype=np.float64)
    accumulators = np.zeros((2, ACCUMULATOR_COUNT))
    _statistics(returns, 0, accumulators[ALL_BARS], accumulators[OUT_OF_SAMPLE])
    _order_statistics(returns, 0, accumulators[ALL_BARS], accumulators[OUT_OF_SAMPLE])
    return accumulators
