from typing import Any


def add(estate: dict[str, Any], put: Any) -> None:
    return None

def change_members(members: Any, versions: Any) -> None:
    return None

def change_estate(estate: Any, put: Any) -> None:
    return None
