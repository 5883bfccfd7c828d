"""ActoR: action-then-answer reasoning. Actions and their text format (`actions`), verifiable rewards
(`rewards`), chat formatting of samples (`formatting`), the SFT cold start (`sft`), GRPO (`grpo`) and the
reward plot (`plot`). The training modules import TRL lazily, so `actions` / `rewards` stay light."""
from .actions import (Action, Completion, PairActions, Parsed, compose_actions, expected_pairs,
                      format_completion, format_pair, parse_action, parse_completion, parse_pair,
                      teacher_actions, teacher_pairs)
from .rewards import action_reward, answer_reward, format_reward, make_action_reward

__all__ = ["Action", "Completion", "PairActions", "Parsed", "compose_actions",
           "expected_pairs", "format_completion", "format_pair", "parse_action", "parse_completion",
           "parse_pair", "teacher_actions", "teacher_pairs",
           "action_reward", "answer_reward", "format_reward", "make_action_reward"]
