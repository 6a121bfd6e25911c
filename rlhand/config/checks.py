"""The one shape of a config error: the field's name, then what is wrong (load.py makes it one line)."""


def check(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{field_name}: {message}")
