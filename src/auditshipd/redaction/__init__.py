"""Redaction: the policy, the reference redactor, and the fast path behind one seam (:mod:`auditshipd.redaction.ids`)."""
