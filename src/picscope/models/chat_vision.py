"""A VisionModel over a multimodal ChatModel (e.g. `openai:` serving a VLM): images go in the request as data URLs.

verify: one call per image with every statement (JSON schema `verify.v1`); judge: listwise, one call.
Fallback when the output is unusable: P(yes)=0.5 per statement / score 0.5 per candidate, logged and counted.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from picscope.models import events
from picscope.models.base import ChatModel, Message, Verdict, VisionBase
from picscope.models.prompts import load_prompt

SEEING = "You can see the image(s) attached; use them as the evidence."


class ChatVision(VisionBase):
    def __init__(self, chat: ChatModel, max_side: int = 768) -> None:
        self.chat = chat
        self.max_side = max_side
        self.spec = getattr(chat, "spec", "chat")

    def _small(self, image: Image.Image) -> Image.Image:
        im = image.convert("RGB")
        im.thumbnail((self.max_side, self.max_side))
        return im

    def caption(self, image: Image.Image, style: str = "short") -> str:
        length = {"short": "at most 15 words", "detailed": "at most 40 words"}.get(style, "at most 20 words")
        system, user = load_prompt("caption").render(evidence=SEEING, style=style, length=length)
        res = self.chat.chat([Message("system", system), Message("user", user, [self._small(image)])], max_tokens=96)
        if res.fallback or not res.text.strip():
            events.record("fallback.caption", str(res.fallback))
            return ""
        return res.text.strip().split("\n")[0]

    def verify(self, image: Image.Image, questions: Sequence[str],
               reference: Image.Image | None = None) -> list[float]:
        if not questions:
            return []
        prompt = load_prompt("verify")
        ev = SEEING + (" The second image is the reference." if reference is not None else "")
        numbered = "\n".join(f"{i + 1}. {q}" for i, q in enumerate(questions))
        system, user = prompt.render(evidence=ev, statements=numbered)
        imgs = [self._small(image)] + ([self._small(reference)] if reference is not None else [])
        res = self.chat.chat([Message("system", system), Message("user", user, imgs)], schema=prompt.schema,
                             max_tokens=24 + 16 * len(questions))
        out = [0.5] * len(questions)
        got = 0
        if isinstance(res.parsed, dict):
            for pos, a in enumerate(res.parsed.get("answers", [])):
                idx = int(a.get("n", pos + 1)) - 1
                if 0 <= idx < len(out):
                    out[idx] = 1.0 if a.get("answer") == "yes" else 0.0
                    got += 1
        if got < len(questions):
            events.record("fallback.verify", f"{len(questions) - got} unanswered ({res.fallback}); P(yes)=0.5")
        return out

    def judge(self, instruction: str, candidates: Sequence[Image.Image],
              reference: Image.Image | None = None) -> list[Verdict]:
        if not candidates:
            return []
        prompt = load_prompt("judge")
        ref = "The first attached image is the reference.\n" if reference is not None else ""
        cands = "\n".join(f"{i + 1}. attached image {i + 1 + (reference is not None)}" for i in range(len(candidates)))
        system, user = prompt.render(instruction=instruction, reference=ref, candidates=cands)
        imgs = ([self._small(reference)] if reference is not None else []) + [self._small(c) for c in candidates]
        res = self.chat.chat([Message("system", system.replace("You cannot see them", "You can see them")),
                              Message("user", user, imgs)], schema=prompt.schema,
                             max_tokens=40 + 40 * len(candidates))
        verdicts = [Verdict(0.5, "no judgement (model output unusable)") for _ in candidates]
        if isinstance(res.parsed, dict):
            for pos, s in enumerate(res.parsed.get("scores", [])):
                idx = int(s.get("n", pos + 1)) - 1
                if 0 <= idx < len(verdicts):
                    score = max(0.0, min(10.0, float(s.get("score", 5)))) / 10
                    verdicts[idx] = Verdict(score, str(s.get("reason", "")))
        else:
            events.record("fallback.judge", str(res.fallback))
        for rank, i in enumerate(sorted(range(len(verdicts)), key=lambda j: -verdicts[j].score)):
            verdicts[i].rank = rank + 1
        return verdicts
