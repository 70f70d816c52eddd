"""Where a chunk may end: the cutting rules, apart from the chunks built from them (`chunking`).

Cuts fall, in order of preference, at the start of a speaker turn, at a paragraph break, at a line break, after the
end of a sentence, and at any whitespace; never inside a word, unless one "word" (a run without whitespace, such as
a base64 image) is longer than `max_tokens`: that is cut at token boundaries, and the cut recorded. Each chunk after
the first repeats about `overlap_tokens` tokens from the end of the one before it, so a passage cut in two is still
seen whole once.

Token counts are estimated from one encoding of the whole text (character offset of every token, searched with
bisect) and then checked with one exact encoding of each chunk, so large documents are cut in linear time.
"""

from __future__ import annotations

import functools
import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from itertools import accumulate, islice

import tiktoken

from ..config import ChunkingConfig

_WS_RUN = re.compile(r"\s+")
_WS_OPT = re.compile(r"\s*")
_SENTENCE_END = frozenset(".!?…")
# A sentence may end inside quotes or brackets: `He said "no." Then` still ends a sentence before `Then`.
_CLOSERS = frozenset("\"')]}’”»")
# Documents are encoded in blocks of about this many characters so that the token list of a 50 MB text never sits
# in memory at once; a block ends at a line break where there is one, which keeps the estimate exact.
_BLOCK_CHARS = 1 << 20

# Cut ranks, best first.
_TURN, _PARAGRAPH, _LINE, _SENTENCE, _SPACE = range(5)


@functools.cache
def _token_char_lengths(enc: tiktoken.Encoding) -> tuple[int, ...]:
    """Characters each token id starts, indexed by id: its bytes that are not UTF-8 continuation bytes.

    A token that begins inside a multi-byte character is thus placed one character late; that only moves an
    estimate, never a cut, so it saves decoding every token of the document.
    """
    continuation = bytes(range(0x80, 0xC0))
    lengths = []
    for token in range(enc.n_vocab):
        try:
            lengths.append(len(enc.decode_single_token_bytes(token).translate(None, continuation)))
        except KeyError:  # ids the encoding leaves unused
            lengths.append(0)
    return tuple(lengths)


class Cutter:
    """The cuts of one text into chunks; positions are character offsets into it.

    `turn_starts` are the offsets where speaker turns start (the best cuts); the chunks themselves, their ids and
    speakers, are built by `chunking` from `spans()`.
    """

    def __init__(self, text: str, turn_starts: Iterable[int], cfg: ChunkingConfig, enc: tiktoken.Encoding):
        self.text = text
        self.n = len(text)
        self.enc = enc
        self.max_tokens = cfg.max_tokens
        self.overlap = cfg.overlap_tokens
        # At least half of max_tokens, and far enough past the overlap that every chunk moves on by a quarter of
        # max_tokens: an overlap close to half the size would otherwise let chunks advance a word at a time.
        self.min_tokens = min(cfg.max_tokens, max(cfg.max_tokens // 2, cfg.overlap_tokens + cfg.max_tokens // 4))
        self.text_end = len(text.rstrip())
        self.offsets = self._token_offsets()
        # Cuts are placed before the text a turn starts with, whatever whitespace its offset points at.
        self.turn_starts = {_WS_OPT.match(text, s).end() for s in turn_starts if 0 <= s < self.n}
        self.cuts_in_runs: list[int] = []  # where a run without whitespace longer than max_tokens was cut

    # --- token estimates -------------------------------------------------------------------------------------

    def _token_offsets(self) -> array:
        """Start offset of every token of the document, non-decreasing."""
        char_lengths = _token_char_lengths(self.enc).__getitem__
        offsets = array("q")
        start = 0
        while start < self.n:
            stop = min(start + _BLOCK_CHARS, self.n)
            if stop < self.n:
                newline = self.text.rfind("\n", start, stop)
                if newline > start:
                    stop = newline + 1
            tokens = self.enc.encode_ordinary(self.text[start:stop])
            offsets.extend(islice(accumulate(map(char_lengths, tokens), initial=start), len(tokens)))
            start = stop
        return offsets

    def _token_at(self, pos: int) -> int:
        """Index of the token covering `pos`."""
        return max(bisect_right(self.offsets, pos) - 1, 0)

    def _estimate(self, start: int, end: int) -> int:
        return bisect_left(self.offsets, end) - self._token_at(start)

    def _after_tokens(self, start: int, k: int) -> int:
        """The position `k` tokens after `start`: text[start:p] holds about k tokens for any p up to it."""
        i = self._token_at(start) + k
        return self.offsets[i] if i < len(self.offsets) else self.n

    def _count(self, start: int, end: int) -> int:
        return len(self.enc.encode_ordinary(self.text[start:end]))

    # --- cut points ------------------------------------------------------------------------------------------

    def _runs(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """Whitespace runs (q, p), whole, whose first character q lies in [lo, hi]."""
        text = self.text
        if lo > hi:
            return
        skip_partial = lo > 0 and text[lo - 1].isspace()
        for m in _WS_RUN.finditer(text, lo, hi + 1):
            q, p = m.span()
            if skip_partial and q == lo:
                continue
            if p == hi + 1:  # the search stopped at hi: the run may go on
                p = _WS_OPT.match(text, p).end()
            yield q, p

    def _rank(self, q: int, p: int) -> int:
        text = self.text
        if p in self.turn_starts:
            return _TURN
        breaks = text.count("\n", q, p) or text.count("\r", q, p)
        if breaks >= 2 or "\u2029" in text[q:p]:
            return _PARAGRAPH
        if breaks == 1:
            return _LINE
        k = q - 1
        while k > 0 and q - k <= 3 and text[k] in _CLOSERS:
            k -= 1
        return _SENTENCE if text[k] in _SENTENCE_END else _SPACE

    def _best_cut(self, start: int, floor: int, limit: int) -> tuple[int, int] | None:
        """The cut (q, p) with floor < q <= limit: the chunk is text[start:q] and the text after it starts at p."""
        preferred_from = max(self._after_tokens(start, self.min_tokens), floor + 1)
        best: tuple[int, int] | None = None
        best_rank = _SPACE + 1
        for q, p in self._runs(preferred_from, limit):
            rank = self._rank(q, p)
            if rank <= best_rank:  # later wins among equals
                best, best_rank = (q, p), rank
        if best is not None:
            return best
        # Nothing in the preferred range: take the latest cut before it, however short the chunk.
        for q, p in self._runs(floor + 1, min(preferred_from - 1, limit)):
            best = (q, p)
        return best

    def _cut(self, start: int, floor: int) -> tuple[int, int, int] | None:
        """End of the chunk starting at `start` and ending after `floor`: (end, next text, n_tokens)."""
        if self._estimate(start, self.text_end) <= self.max_tokens + self.max_tokens // 16 + 4:
            n_tokens = self._count(start, self.text_end)
            if n_tokens <= self.max_tokens:
                return self.text_end, self.n, n_tokens
        limit = self._after_tokens(start, self.max_tokens)
        while True:
            cut = self._best_cut(start, floor, limit)
            if cut is None:
                return None
            q, p = cut
            n_tokens = self._count(start, q)
            if n_tokens <= self.max_tokens:
                return q, p, n_tokens
            # The estimate was off (tokens merge differently at the chunk's edges): pull the limit back by the excess.
            excess = n_tokens - self.max_tokens
            limit = min(self._after_tokens(start, max(self._estimate(start, q) - excess, 0)), q - 1)

    def _cut_in_run(self, start: int) -> tuple[int, int, int]:
        """End of a chunk that no whitespace can end: (end, next text, n_tokens).

        The text at `start` is a run without whitespace. If the run fits in max_tokens it is one chunk, as before;
        if it is longer (a base64 image, say), it is cut inside, as a last resort, where the first max_tokens of
        its tokens end (at a character boundary, and checked by an exact count). Only a window of about max_tokens
        tokens is searched and encoded, so a 3 MB run takes linear time.
        """
        text, cap = self.text, self.max_tokens
        hi = max(self._after_tokens(start, cap + 16), start + 1)
        while True:
            m = _WS_RUN.search(text, start + 1, hi)
            stop = m.start() if m else hi
            tokens = self.enc.encode_ordinary(text[start:stop])
            if len(tokens) > cap:
                break
            if m or hi >= self.n:  # the run ends within max_tokens
                return stop, (m.end() if m else self.n), len(tokens)
            hi = min(self.n, start + 2 * (hi - start))  # the estimate fell short: look further
        k = cap
        while True:
            head = b"".join(map(self.enc.decode_single_token_bytes, tokens[:k])).decode("utf-8", "ignore")
            end = start + max(len(head), 1)
            n_tokens = self._count(start, end)
            if n_tokens <= cap:
                break
            k -= n_tokens - cap  # the head alone encodes into more tokens than it took in the run
        self.cuts_in_runs.append(end)
        return end, end, n_tokens

    def _overlap_start(self, start: int, end: int, after: int) -> int:
        """Where the chunk after text[start:end] begins: about `overlap` tokens before `end`, at a word start."""
        if self.overlap == 0:
            return after
        i_end = bisect_left(self.offsets, end)
        i_start = self._token_at(start)
        if i_end - self.overlap <= i_start:
            return after
        target = self.offsets[i_end - self.overlap]
        window_lo = self.offsets[max(i_end - (3 * self.overlap + 1) // 2, i_start)]
        window_hi = self.offsets[min(i_end - self.overlap // 2, len(self.offsets) - 1)]
        best: tuple[int, int] | None = None  # (rank, distance to target)
        chosen = after
        for q, p in self._runs(max(window_lo, start), min(window_hi, end - 1)):
            if p <= start or p >= end:
                continue
            key = (self._rank(q, p), abs(p - target))
            if best is None or key < best:
                best, chosen = key, p
        if best is None:  # a long word fills the window: start at the next word instead
            for _q, p in self._runs(max(window_hi, start), end - 1):
                if start < p < end:
                    chosen = p
                    break
        return chosen if start < chosen else after

    def spans(self) -> Iterator[tuple[int, int, int]]:
        """(start, end, n_tokens) of each chunk, in order."""
        start = _WS_OPT.match(self.text).end()
        floor = start
        after_previous = start
        while start < self.text_end:
            cut = self._cut(start, floor)
            if cut is None:  # the overlap leaves no room to move past the previous chunk: drop it this once
                start = floor = after_previous
                cut = self._cut(start, floor) or self._cut_in_run(start)
            end, after, n_tokens = cut
            yield start, end, n_tokens
            if end >= self.text_end:
                return
            next_start = self._overlap_start(start, end, after)
            start, floor, after_previous = next_start, end, after
