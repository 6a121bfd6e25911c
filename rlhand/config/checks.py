"""The one shape of a config error: the field's name, then what is wrong (load.py makes it one line)."""


def check(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{field_name}: {message}")


def check_mixture(mixture: dict, section: str, path) -> None:
    """name -> {path, weight > 0}; a mixture replaces `<section>.path`."""
    check(not (mixture and path), f"{section}.mixture", f"give {section}.path or {section}.mixture, not both")
    for name, spec in mixture.items():
        check(isinstance(spec, dict) and bool(spec.get("path")), f"{section}.mixture.{name}", "needs a path")
        weight = spec.get("weight")
        check(isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight > 0, f"{section}.mixture.{name}.weight", "needs a number > 0")


SCORER_KINDS = ("_target_", "model", "url")  # a reward function, a reward-model folder, a reward server
SERVER_SETTINGS = {"timeout_s": 0, "retries": 0, "request_size": 1, "in_flight": 1}  # as reward.*; each one's least value


def check_scorer_spec(spec, field_name: str, weighted: bool = False) -> None:
    """A named scorer (reward.components, eval.scorers): exactly one of _target_ (a reward function,
    its other keys its arguments), model (a reward-model folder) or url (a reward server); `weighted`:
    also a numeric weight."""
    what = "_target_ (a reward function), model (a reward-model folder) or url (a reward server)"
    check(isinstance(spec, dict), field_name, f"needs {what}")
    kinds = [k for k in SCORER_KINDS if spec.get(k)]
    check(len(kinds) == 1, field_name, f"needs exactly one of {what}" + (f", not {' and '.join(kinds)}" if kinds else ""))
    settings = {"_target_": None, "model": {"model", "chat_template"}, "url": {"url", *SERVER_SETTINGS}}[kinds[0]]
    unknown = sorted(set(spec) - settings - {"weight"}) if settings else []
    check(not unknown, f"{field_name}.{unknown[0] if unknown else ''}", f"not a setting of a scorer with {kinds[0]} (have {', '.join(sorted(settings or []))})")
    if spec.get("url"):
        check(str(spec["url"]).startswith(("http://", "https://")), f"{field_name}.url", f"needs an http:// or https:// URL, not {spec['url']!r}")
        for key, least in SERVER_SETTINGS.items():
            if key in spec:
                value = spec[key]
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if key == "timeout_s":
                    check(number and value > 0, f"{field_name}.{key}", f"needs a number > 0, not {value!r}")
                else:
                    check(number and value == int(value) and value >= least, f"{field_name}.{key}", f"needs a whole number >= {least}, not {value!r}")
    if spec.get("chat_template") is not None:
        check(spec["chat_template"] in ("auto", "on", "off"), f"{field_name}.chat_template", f"auto, on or off, not {spec['chat_template']!r}")
    if weighted:
        weight = spec.get("weight")
        check(isinstance(weight, (int, float)) and not isinstance(weight, bool), f"{field_name}.weight", "needs a number")
