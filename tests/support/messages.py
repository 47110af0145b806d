"""The wire protocol's sample messages: one valid payload per message kind, with the channel it
travels on and its publisher (``SAMPLES``, by kind; ``AUDIT_SAMPLE``, an audit event), and the
values they are written with, for the message tests."""

from __future__ import annotations

from typing import Any

CONSULTATION = "consultation.dr-lee.pt-1"
VIDEO = CONSULTATION + ".video"
T = "2026-11-22T14:03:07.123Z"
UUID_A = "6f1d2d0e-7c1a-4b7e-9a53-0d8b8f3c2a11"
UUID_B = "0b7e5c52-2f4e-4a39-8d0c-5e3b8a8f1c22"

# One valid wire payload per message, with the channel it travels on and its publisher.
SAMPLES: dict[str, tuple[str, dict[str, Any], str]] = {
    "PATIENT_CHECKED_IN": (
        "waiting-room.dr-lee",
        {
            "action": "PATIENT_CHECKED_IN",
            "appointmentId": "appt-9",
            "patientId": "pt-1",
            "consultationId": CONSULTATION,
            "timestamp": T,
        },
        "pt-1",
    ),
    "PROVIDER_JOINED": (
        CONSULTATION,
        {"action": "PROVIDER_JOINED", "providerId": "dr-lee", "state": "connecting", "timestamp": T},
        "dr-lee",
    ),
    "CONSULTATION_STARTED": (
        CONSULTATION,
        {"action": "CONSULTATION_STARTED", "providerId": "dr-lee", "state": "in-progress", "timestamp": T},
        "dr-lee",
    ),
    "WRAP_UP_STARTED": (
        CONSULTATION,
        {"action": "WRAP_UP_STARTED", "providerId": "dr-lee", "state": "wrapping-up", "timestamp": T},
        "dr-lee",
    ),
    "CONSULTATION_ENDED": (
        CONSULTATION,
        {
            "action": "CONSULTATION_ENDED",
            "providerId": "dr-lee",
            "state": "completed",
            "summary": {"duration": 12, "followUpRequired": True},
            "timestamp": T,
        },
        "dr-lee",
    ),
    "PROVIDER_INVITED": (
        CONSULTATION,
        {
            "action": "PROVIDER_INVITED",
            "invitedProviderId": "dr-cardio",
            "invitedBy": "dr-lee",
            "role": "specialist",
            "timestamp": T,
        },
        "dr-lee",
    ),
    "PROVIDER_REMOVED": (
        CONSULTATION,
        {"action": "PROVIDER_REMOVED", "providerId": "dr-cardio", "removedBy": "dr-lee", "timestamp": T},
        "dr-lee",
    ),
    "CONSULTATION_CANCELLED": (
        CONSULTATION,
        {"action": "CONSULTATION_CANCELLED", "cancelledBy": "pt-1", "reason": "patient-left", "timestamp": T},
        "pt-1",
    ),
    "DEVICE_STATUS": (
        CONSULTATION,
        {
            "action": "DEVICE_STATUS",
            "camera": "pass",
            "microphone": "warn",
            "speaker": "skipped",
            "network": "audio-only",
            "timestamp": T,
        },
        "pt-1",
    ),
    "chat": (
        CONSULTATION,
        {
            "type": "chat",
            "id": UUID_A,
            "senderId": "pt-1",
            "senderRole": "patient",
            "text": "hello",
            "sentAt": T,
        },
        "pt-1",
    ),
    "chat-read": (
        CONSULTATION,
        {"type": "chat-read", "id": UUID_B, "readerId": "dr-lee", "upToId": UUID_A, "readAt": T},
        "dr-lee",
    ),
    "PATIENT_READY": (
        "notification.dr-lee",
        {
            "type": "PATIENT_READY",
            "title": "Patient Checked In",
            "body": "Patient is ready for consultation",
            "priority": "high",
            "appointmentId": "appt-9",
            "consultationId": CONSULTATION,
            "timestamp": T,
        },
        "pt-1",
    ),
    "PROVIDER_READY": (
        "notification.pt-1",
        {
            "type": "PROVIDER_READY",
            "title": "t",
            "body": "b",
            "priority": "high",
            "consultationId": CONSULTATION,
            "timestamp": T,
        },
        "dr-lee",
    ),
    "QUEUE_UPDATE": (
        "notification.pt-1",
        {
            "type": "QUEUE_UPDATE",
            "title": "t",
            "body": "",
            "priority": "normal",
            "consultationId": CONSULTATION,
            "position": 1,
            "estimatedWaitMinutes": 0,
            "timestamp": T,
        },
        "dr-lee",
    ),
    "CONSULTATION_INVITE": (
        "notification.dr-cardio",
        {
            "type": "CONSULTATION_INVITE",
            "title": "t",
            "body": "b",
            "priority": "high",
            "consultationId": CONSULTATION,
            "invitedBy": "dr-lee",
            "role": "second-opinion",
            "timestamp": T,
        },
        "dr-lee",
    ),
    "EMERGENCY_ESCALATION notification": (
        "notification.dr-oncall",
        {
            "type": "EMERGENCY_ESCALATION",
            "title": "URGENT",
            "body": "b",
            "priority": "critical",
            "escalationId": UUID_A,
            "timestamp": T,
        },
        "dr-lee",
    ),
    "offer": (VIDEO, {"type": "offer", "senderId": "dr-lee", "sdp": "v=0\r\n", "timestamp": T}, "dr-lee"),
    "answer": (VIDEO, {"type": "answer", "senderId": "pt-1", "sdp": "v=0\r\n", "timestamp": T}, "pt-1"),
    "ice-candidate": (
        VIDEO,
        {
            "type": "ice-candidate",
            "senderId": "dr-lee",
            "timestamp": T,
            "candidate": {
                "candidate": "candidate:1 1 udp 58466303 127.0.0.1 49772 typ relay",
                "sdpMid": "0",
                "sdpMLineIndex": 0,
                "usernameFragment": "nl5y",
            },
        },
        "dr-lee",
    ),
    "end-call": (VIDEO, {"type": "end-call", "senderId": "pt-1", "timestamp": T}, "pt-1"),
    "EMERGENCY_ESCALATION": (
        "emergency.cardiology",
        {
            "id": UUID_A,
            "action": "EMERGENCY_ESCALATION",
            "consultationId": CONSULTATION,
            "escalatedBy": "dr-lee",
            "severity": "life-threatening",
            "reason": "chest pain",
            "timestamp": T,
            "status": "active",
        },
        "dr-lee",
    ),
    "EMERGENCY_RESOLVED": (
        "emergency.cardiology",
        {
            "id": UUID_A,
            "action": "EMERGENCY_RESOLVED",
            "resolvedBy": "nurse-1",
            "resolution": "transferred",
            "timestamp": T,
            "status": "resolved",
        },
        "nurse-1",
    ),
}

AUDIT_SAMPLE: dict[str, Any] = {
    "id": UUID_A,
    "timestamp": T,
    "eventType": "CONSULTATION_SESSION_START",
    "severity": "info",
    "organizationId": "clinic-north",
    "actor": {"userId": "dr-lee", "role": "provider", "ipAddress": "10.0.0.5"},
    "resource": {"type": "consultation", "id": CONSULTATION, "channel": CONSULTATION},
    "action": "START",
    "outcome": "success",
    "metadata": {"sessionId": "s-1", "consentRef": "c-1"},
    "deviceId": "dr-lee",
    "sequence": 1,
}
SAMPLES["audit"] = ("audit.clinic-north", AUDIT_SAMPLE, "dr-lee")
