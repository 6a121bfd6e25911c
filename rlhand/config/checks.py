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
