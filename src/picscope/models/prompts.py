"""Versioned prompt files (`prompts/<name>.v<N>.{system,user}.txt` + `<name>.v<N>.schema.json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

PROMPT_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    system: str
    user: str
    schema: dict[str, Any] | None

    @property
    def id(self) -> str:
        return f"{self.name}.v{self.version}"

    def render(self, **values: Any) -> tuple[str, str]:
        """(system, user) with the `$name` placeholders filled: all of the user part's (a missing value is a
        KeyError), and those of the system part that are given (most system prompts have none)."""
        text = {k: str(v) for k, v in values.items()}
        return Template(self.system).safe_substitute(text).strip(), Template(self.user).substitute(text).strip()


@cache
def load_prompt(name: str, version: int = 1) -> Prompt:
    base = PROMPT_DIR / f"{name}.v{version}"
    system = base.with_name(base.name + ".system.txt")
    if not system.exists():
        raise FileNotFoundError(f"no prompt {name} v{version} in {PROMPT_DIR}")
    schema_file = base.with_name(base.name + ".schema.json")
    schema = json.loads(schema_file.read_text(encoding="utf-8")) if schema_file.exists() else None
    return Prompt(name, version, system.read_text(encoding="utf-8"),
                  base.with_name(base.name + ".user.txt").read_text(encoding="utf-8"), schema)
