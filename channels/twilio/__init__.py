"""What the Twilio channels share: SMS (`channels.sms`) and WhatsApp (`channels.whatsapp`).

Both speak Twilio's Messages API and take Twilio's webhooks on the same two URLs, so
the code for that lives here once: the REST client and its errors (`rest`), the
signature check, the form fields and the one webhook that hands each request to the
channel its address belongs to (`webhook`), media fetched on demand (`media`), plain
text in segments (`text`), and the record of which parts of a message went (`parts`).
"""
