"""In-memory sample data for the demo backend.

Every value is made up. The card numbers are test numbers that payment processors
publish for sandbox use. They pass the Luhn check, so card-number detectors match them.
The IBANs use the check digits "00", which no valid IBAN has (valid ones are 02 to 98).
"""

from typing import Any

JsonObject = dict[str, Any]

PRODUCTS: tuple[JsonObject, ...] = (
    {
        "id": "p-100",
        "name": "Everyday Checking",
        "kind": "account",
        "currency": "EUR",
        "monthly_fee": "0.00",
    },
    {
        "id": "p-200",
        "name": "High-Yield Savings",
        "kind": "account",
        "currency": "EUR",
        "interest_rate": "3.10",
    },
    {
        "id": "p-300",
        "name": "Travel Credit Card",
        "kind": "card",
        "currency": "USD",
        "annual_fee": "95.00",
    },
)

ORDERS: tuple[JsonObject, ...] = (
    {
        "id": "ord-5001",
        "account_id": "acc-1001",
        "symbol": "ACME",
        "side": "buy",
        "quantity": 10,
        "status": "filled",
    },
    {
        "id": "ord-5002",
        "account_id": "acc-2002",
        "symbol": "GLOBEX",
        "side": "sell",
        "quantity": 4,
        "status": "pending",
    },
)

ACCOUNTS: dict[str, JsonObject] = {
    "acc-1001": {
        "id": "acc-1001",
        "owner": "Alice Example",
        "email": "alice@example.com",
        "iban": "DE00 1234 5678 9012 3456 78",
        "card_number": "4111111111111111",
        "balance": "2450.75",
        "currency": "EUR",
    },
    "acc-2002": {
        "id": "acc-2002",
        "owner": "Bob Example",
        "email": "bob@example.com",
        "iban": "FR00 2004 1010 0505 0001 3M02 606",
        "card_number": "5555555555554444",
        "balance": "310.00",
        "currency": "EUR",
    },
}

TRANSACTIONS: dict[str, tuple[JsonObject, ...]] = {
    "acc-1001": (
        {"id": "tx-1", "amount": "-42.10", "currency": "EUR", "description": "Grocery store"},
        {"id": "tx-2", "amount": "2500.00", "currency": "EUR", "description": "Salary"},
        {"id": "tx-3", "amount": "-7.15", "currency": "EUR", "description": "Coffee"},
    ),
    "acc-2002": (
        {"id": "tx-4", "amount": "-120.00", "currency": "EUR", "description": "Electricity"},
        {"id": "tx-5", "amount": "430.00", "currency": "EUR", "description": "Refund"},
    ),
}

ADMIN_USERS: tuple[JsonObject, ...] = (
    {"id": "u-1", "email": "admin@example.com", "role": "admin", "mfa_enabled": True},
    {"id": "u-2", "email": "support@example.com", "role": "support", "mfa_enabled": False},
)

AUDIT_EVENTS: tuple[JsonObject, ...] = (
    {
        "id": "ev-1",
        "time": "2024-05-01T09:12:00Z",
        "actor": "u-1",
        "action": "user.role_changed",
        "target": "u-2",
    },
    {
        "id": "ev-2",
        "time": "2024-05-02T17:40:00Z",
        "actor": "u-2",
        "action": "account.viewed",
        "target": "acc-1001",
    },
)
