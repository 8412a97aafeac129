"""`socratic`: an offline VisionModel composed from the dual encoder, OCR, colour statistics and a ChatModel.

Per image (cached by pixel hash, in memory and on disk) we gather evidence: zero-shot tags from the dual encoder
over `data/vocabulary.txt`, OCR text (`rapidocr_onnxruntime`), and colour statistics. The ChatModel writes captions,
answers yes/no statements and scores candidates from that evidence (Socratic Models, Zeng et al. 2022).
A second, cheap verifier signal is the encoder similarity of a statement vs. its negation.
Fallbacks: when the LLM output is unusable, `verify` uses the encoder signal alone, `caption` a template caption
from the top tags, `judge` the encoder similarity; each fallback is logged and counted.
"""

from __future__ import annotations

import copy
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from picscope.models import events
from picscope.models.base import ChatModel, FusionDefaults, Message, Verdict, VisionBase
from picscope.models.cache import ResponseCache, image_hash, make_key
from picscope.models.prompts import load_prompt

VOCAB_FILE = Path(__file__).parent / "data" / "vocabulary.txt"
TEMPLATES = {
    "objects": "a photo of a {}",
    "scenes": "a photo of a {}",
    "activities": "a photo of someone {}",
    "attributes": "a {} photo",
    "colours": "a photo of something {}",
    "counts": "a photo of {} people or things",
}
TOP_K = {"objects": 5, "scenes": 3, "activities": 3, "attributes": 2, "colours": 2, "counts": 1}
PALETTE = {
    "black": (20, 20, 20), "white": (240, 240, 240), "grey": (128, 128, 128), "red": (200, 30, 30),
    "orange": (240, 140, 30), "yellow": (235, 220, 50), "green": (50, 160, 60), "blue": (40, 80, 200),
    "light blue": (140, 190, 235), "purple": (130, 60, 160), "pink": (240, 150, 190), "brown": (120, 80, 40),
    "beige": (215, 195, 160),
}


def exactly(schema: dict[str, Any] | None, key: str, n: int) -> dict[str, Any] | None:
    """The schema with array `key` fixed to n items, so constrained decoding cannot answer with an empty list
    (the 0.5B model did: `{"scores": []}`)."""
    if schema is None:
        return None
    out = copy.deepcopy(schema)
    out["properties"][key].update(minItems=n, maxItems=n)
    return out


_PROMPT_ECHO = re.compile(r"^(?:evidence|caption|answer|objects|scenes|description|image|photo)\s*:", re.I)


def usable_caption(text: str) -> bool:
    """A caption is at least two words of prose, not an echo of the prompt's headings ('Evidence:')."""
    words = re.findall(r"[A-Za-z]{2,}", text)
    return len(words) >= 2 and not _PROMPT_ECHO.match(text.strip()) and not text.strip().endswith(":")


def load_vocabulary(path: Path = VOCAB_FILE) -> dict[str, list[str]]:
    vocab: dict[str, list[str]] = {}
    section = "objects"
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        vocab.setdefault(section, []).append(line)
    return vocab


_QUESTION = (("is there ", ""), ("are there ", ""), ("is it ", "it is "), ("is this ", "this is "),
             ("does it show ", ""), ("does the photo show ", ""), ("does the image show ", ""),
             ("can you see ", ""), ("do you see ", ""), ("is the ", "the "), ("are the ", "the "))


def statement_of(text: str) -> str:
    """A yes/no question as a statement the encoder can embed: 'Are there two dogs?' -> 'two dogs'."""
    s = " ".join(text.split()).rstrip("?!. ")
    low = s.lower()
    if not text.strip().endswith("?"):
        return s
    for prefix, repl in _QUESTION:
        if low.startswith(prefix):
            return repl + s[len(prefix):]
    return s


def negate(statement: str) -> str:
    """A plain negation for the encoder signal: 'a dog on grass' -> 'a photo with no dog on grass'."""
    s = statement.strip().rstrip(".?!")
    low = s.lower()
    for prefix in ("there is ", "there are ", "this is ", "it is ", "the image shows ", "the photo shows ",
                   "a photo of ", "an image of "):
        if low.startswith(prefix):
            s = s[len(prefix):]
            break
    return f"a photo with no {s}"


def colour_stats(image: Image.Image) -> dict[str, Any]:
    small = np.asarray(image.convert("RGB").resize((48, 48)), dtype=np.float32).reshape(-1, 3)
    names = list(PALETTE)
    pal = np.array([PALETTE[n] for n in names], np.float32)
    nearest = ((small[:, None, :] - pal[None]) ** 2).sum(-1).argmin(1)
    frac = np.bincount(nearest, minlength=len(names)) / len(nearest)
    order = np.argsort(-frac)[:3]
    grey = small.mean(1)
    return {
        "dominant": [(names[i], round(float(frac[i]), 2)) for i in order if frac[i] >= 0.08],
        "brightness": round(float(grey.mean() / 255), 2),
        "colourfulness": round(float(small.std(1).mean() / 128), 2),
    }


@dataclass
class Evidence:
    tags: dict[str, list[tuple[str, float]]]
    ocr: list[str] = field(default_factory=list)
    colours: dict[str, Any] = field(default_factory=dict)
    size: tuple[int, int] = (0, 0)

    def render(self) -> str:
        lines = []
        for section, items in self.tags.items():
            if items:
                lines.append(f"{section}: " + ", ".join(f"{t} ({s:.2f})" for t, s in items))
        lines.append("text in image: " + ("; ".join(self.ocr)[:300] if self.ocr else "none"))
        dom = ", ".join(f"{n} {int(f * 100)}%" for n, f in self.colours.get("dominant", []))
        lines.append(f"colours: {dom or 'mixed'}; brightness {self.colours.get('brightness', 0):.2f}")
        return "\n".join(lines)

    def template_caption(self) -> str:
        obj = self.tags.get("objects", [("thing", 0)])[0][0]
        act = self.tags.get("activities", [])
        scene = self.tags.get("scenes", [])
        s = f"a {obj}"
        if act:
            s += f" {act[0][0]}"
        if scene:
            s += f" in a {scene[0][0]} scene"
        return s


class SocraticVision(VisionBase):
    answers_from_encoder = True  # verify = the encoder's similarities of statement vs. negation (no LLM by default)
    # its answers add no evidence to stage 1 (bundled-v2, held-out dev captions: weight 0 → R@1 27.1, 0.3 → 26.3,
    # 1.0 → 23.8), so stage 2 only explains by default
    fusion = FusionDefaults(verify_weight=0.0)

    def __init__(self, chat: ChatModel, encoder: Any = None, *, ocr: bool = True, llm_weight: float = 0.3,
                 vocabulary: Path = VOCAB_FILE, cache: ResponseCache | None = None, tau: float = 0.03,
                 verify_llm_weight: float = 0.0) -> None:
        self.chat = chat
        # Verification skips the LLM by default: on Flickr8k dev statements the 0.5B LLM's answers are at chance
        # and mixing them in at 0.3 lowered accuracy (0.735 -> 0.705, benchmarks/bench_socratic.py), at ~5 s a call.
        self.verify_llm_weight = verify_llm_weight
        self._encoder = encoder
        self.use_ocr = ocr
        self.llm_weight = llm_weight
        self.tau = tau
        self.vocab = load_vocabulary(vocabulary)
        self.vocab_id = make_key(self.vocab)[:12]
        self.spec = f"socratic[{getattr(chat, 'spec', type(chat).__name__)}]"
        self.cache = cache if cache is not None else ResponseCache(namespace="socratic-evidence")
        self._mem: dict[str, Evidence] = {}
        self._vec_mem: dict[str, np.ndarray] = {}
        self._txt_mem: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._ocr_engine: Any = None

    # -- components ---------------------------------------------------------------------------------
    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from picscope.encoders import default_encoder_spec, make_encoder

            self._encoder = make_encoder(default_encoder_spec())
        return self._encoder

    @cached_property
    def _vocab_vectors(self) -> dict[str, np.ndarray]:
        return {sec: np.asarray(self.encoder.embed_texts([TEMPLATES.get(sec, "a photo of {}").format(t)
                                                           for t in terms]))
                for sec, terms in self.vocab.items()}

    def _ocr(self, image: Image.Image) -> list[str]:
        if not self.use_ocr:
            return []
        try:
            if self._ocr_engine is None:
                from rapidocr_onnxruntime import RapidOCR

                self._ocr_engine = RapidOCR()
            arr = np.asarray(image.convert("RGB"))[:, :, ::-1]  # BGR like cv2
            result, _ = self._ocr_engine(arr)
        except Exception as exc:
            events.record("ocr_error", f"{type(exc).__name__}: {exc}")
            return []
        return [str(r[1]) for r in (result or []) if float(r[2]) >= 0.6 and str(r[1]).strip()][:12]

    def evidence(self, image: Image.Image) -> Evidence:
        h = image_hash(image)
        key = make_key({"enc": getattr(self.encoder, "name", "?"), "vocab": self.vocab_id, "img": h,
                        "ocr": self.use_ocr, "v": 1})
        with self._lock:
            if key in self._mem:
                return self._mem[key]
        hit = self.cache.get(key)
        if hit is not None:
            ev = Evidence(tags={k: [(t, float(s)) for t, s in v] for k, v in hit["tags"].items()},
                          ocr=list(hit["ocr"]), colours=hit["colours"], size=tuple(hit["size"]))
        else:
            img = image.convert("RGB")
            v = self._image_vec(img)
            tags: dict[str, list[tuple[str, float]]] = {}
            for sec, mat in self._vocab_vectors.items():
                sims = mat @ v
                p = np.exp((sims - sims.max()) / 0.02)
                p /= p.sum()
                top = np.argsort(-p)[: TOP_K.get(sec, 3)]
                tags[sec] = [(self.vocab[sec][i], round(float(p[i]), 2)) for i in top if p[i] >= 0.05 or i == top[0]]
            ev = Evidence(tags=tags, ocr=self._ocr(img), colours=colour_stats(img), size=img.size)
            self.cache.put(key, asdict(ev))
        with self._lock:
            self._mem[key] = ev
        return ev

    def _image_vec(self, image: Image.Image) -> np.ndarray:
        """Encoder embedding of an image, memoised by pixel hash (the pipeline shows one image to several roles)."""
        h = image_hash(image)
        with self._lock:
            hit = self._vec_mem.get(h)
        if hit is not None:
            return hit
        v = np.asarray(self.encoder.embed_images([image.convert("RGB")]))[0]
        with self._lock:
            if len(self._vec_mem) > 4096:
                self._vec_mem.clear()
            self._vec_mem[h] = v
        return v

    def _text_vecs(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._txt_mem]
        if missing:
            vecs = np.asarray(self.encoder.embed_texts(missing))
            with self._lock:
                if len(self._txt_mem) > 20_000:
                    self._txt_mem.clear()
                self._txt_mem.update(zip(missing, vecs, strict=True))
        with self._lock:
            return np.stack([self._txt_mem[t] for t in texts])

    def encoder_p(self, image: Image.Image, statements: Sequence[str]) -> list[float]:
        """P(yes) from the encoder alone: sigmoid of sim(statement) - sim(negation), temperature `tau`."""
        if not statements:
            return []
        return self.encoder_p_vector(self._image_vec(image), statements)

    def encoder_p_vector(self, v: np.ndarray, statements: Sequence[str]) -> list[float]:
        statements = [statement_of(s) for s in statements]
        t = self._text_vecs([*statements, *(negate(s) for s in statements)])
        sims = t @ np.asarray(v, np.float32)
        n = len(statements)
        return [1.0 / (1.0 + math.exp(-float(sims[i] - sims[n + i]) / self.tau)) for i in range(n)]

    @property
    def encoder_name(self) -> str:
        return str(getattr(self.encoder, "name", ""))

    def verify_vectors(self, vectors: np.ndarray, questions: Sequence[str], encoder_name: str
                       ) -> list[list[float]] | None:
        """`verify` for images already embedded by this model's own encoder (library images): no decode, no
        image forward pass. None for another encoder's vectors, or when verification would also ask the LLM
        (then call `verify`)."""
        if self.verify_llm_weight > 0 or encoder_name != self.encoder_name:
            return None
        qs = [str(q) for q in questions]
        return [self.encoder_p_vector(v, qs) for v in np.asarray(vectors, np.float32)]

    # -- VisionModel ---------------------------------------------------------------------------------
    def caption(self, image: Image.Image, style: str = "short") -> str:
        ev = self.evidence(image)
        prompt = load_prompt("caption")
        length = {"short": "at most 15 words", "detailed": "at most 40 words"}.get(style, "at most 20 words")
        system, user = prompt.render(evidence=ev.render(), style=style, length=length)
        res = self.chat.chat([Message("system", system), Message("user", user)], max_tokens=64 if style == "short"
                             else 120, stop=["\n\n"])
        text = res.text.strip().strip('"').split("\n")[0].strip()
        if style == "short" and ". " in text:
            text = text.split(". ")[0] + "."
        if res.fallback or not usable_caption(text):
            events.record("fallback.caption", f"{res.fallback or f'unusable caption {text!r}'}; using the template "
                          "caption")
            return ev.template_caption()
        return text

    def verify_signals(self, image: Image.Image, questions: Sequence[str],
                       reference: Image.Image | None = None) -> dict[str, list[float | None]]:
        """Both signals and their combination: {"llm": [...|None], "encoder": [...], "p": [...]}."""
        qs = [str(q) for q in questions]
        if not qs:
            return {"llm": [], "encoder": [], "p": []}
        enc = self.encoder_p(image, qs)
        if self.verify_llm_weight <= 0:
            return {"llm": [None] * len(qs), "encoder": list(enc), "p": list(enc)}
        ev_text = self.evidence(image).render()
        if reference is not None:
            ev_text += "\nreference image (for comparisons):\n" + self.evidence(reference).render()
        prompt = load_prompt("verify")
        system, user = prompt.render(evidence=ev_text,
                                     statements="\n".join(f"{i + 1}. {q}" for i, q in enumerate(qs)))
        res = self.chat.chat([Message("system", system), Message("user", user)],
                             schema=exactly(prompt.schema, "answers", len(qs)), max_tokens=24 + 16 * len(qs))
        llm: list[float | None] = [None] * len(qs)
        if res.parsed is not None:
            answers = res.parsed.get("answers", []) if isinstance(res.parsed, dict) else []
            for pos, a in enumerate(answers):
                idx = int(a.get("n", pos + 1)) - 1
                if not 0 <= idx < len(qs) or llm[idx] is not None:
                    idx = pos
                if 0 <= idx < len(qs):
                    llm[idx] = 0.9 if a.get("answer") == "yes" else 0.1
        missing = sum(x is None for x in llm)
        if missing:
            events.record("fallback.verify", f"{missing}/{len(qs)} answers missing ({res.fallback}); encoder only")
        w = self.verify_llm_weight
        p = [e if lp is None else w * lp + (1 - w) * e for lp, e in zip(llm, enc, strict=True)]
        return {"llm": llm, "encoder": list(enc), "p": list(p)}

    def verify(self, image: Image.Image, questions: Sequence[str],
               reference: Image.Image | None = None) -> list[float]:
        return [float(x) for x in self.verify_signals(image, questions, reference)["p"] if x is not None]

    def judge(self, instruction: str, candidates: Sequence[Image.Image],
              reference: Image.Image | None = None) -> list[Verdict]:
        if not candidates:
            return []
        q = self._text_vecs([instruction])[0]
        sims = np.stack([self._image_vec(c) for c in candidates]) @ q
        span = float(sims.max() - sims.min())
        enc01 = (sims - sims.min()) / span if span > 1e-9 else np.full(len(candidates), 0.5)
        if self.llm_weight <= 0:  # encoder-only judge (no LLM call)
            verdicts = [Verdict(score=float(enc01[i]), reason=f"encoder similarity {float(sims[i]):.2f}")
                        for i in range(len(candidates))]
            for rank, i in enumerate(sorted(range(len(verdicts)), key=lambda j: -verdicts[j].score)):
                verdicts[i].rank = rank + 1
            return verdicts
        prompt = load_prompt("judge")
        cands = "\n".join(f"{i + 1}.\n{self.evidence(c).render()}" for i, c in enumerate(candidates))
        ref = f"Reference image:\n{self.evidence(reference).render()}\n" if reference is not None else ""
        system, user = prompt.render(instruction=instruction, reference=ref, candidates=cands)
        res = self.chat.chat([Message("system", system), Message("user", user)],
                             schema=exactly(prompt.schema, "scores", len(candidates)),
                             max_tokens=40 + 40 * len(candidates))
        llm: dict[int, tuple[float, str]] = {}
        if isinstance(res.parsed, dict):
            for pos, s in enumerate(res.parsed.get("scores", [])):
                idx = int(s.get("n", pos + 1)) - 1
                if 0 <= idx < len(candidates) and idx not in llm:
                    llm[idx] = (max(0.0, min(10.0, float(s.get("score", 5)))) / 10, str(s.get("reason", ""))[:120])
        if len(llm) < len(candidates):
            events.record("fallback.judge", f"{len(candidates) - len(llm)} candidates unscored ({res.fallback})")
        verdicts = []
        for i in range(len(candidates)):
            if i in llm:
                score = self.llm_weight * llm[i][0] + (1 - self.llm_weight) * float(enc01[i])
                reason = llm[i][1] or "matches the evidence"
            else:
                score, reason = float(enc01[i]), f"encoder similarity {float(sims[i]):.2f} (LLM unavailable)"
            verdicts.append(Verdict(score=float(score), reason=reason))
        for rank, i in enumerate(sorted(range(len(verdicts)), key=lambda j: -verdicts[j].score)):
            verdicts[i].rank = rank + 1
        return verdicts

    def check(self) -> str:
        img = Image.new("RGB", (64, 64), (200, 30, 30))
        ev = self.evidence(img)
        chat_check = getattr(self.chat, "check", None)
        llm = f"; llm: {chat_check()}" if callable(chat_check) else ""
        return f"encoder {getattr(self.encoder, 'name', '?')}; top object {ev.tags['objects'][0][0]!r}{llm}"
