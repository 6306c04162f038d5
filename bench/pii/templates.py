"""Hand-written message templates: what customers write to a small business's assistant, and its answers.

Placeholders: ``{name}`` (a full name), ``{first}``, ``{mr}`` (title + surname), ``{last_first}``
("Weiß, Jürgen"), ``{email}`` (derived from that person's name), ``{phone}``, ``{address}`` (street line,
with or without postcode and town), ``{full_address}``, ``{street}``, ``{address_lines}`` (street and town
on two lines), ``{card}``, ``{iban}``, ``{id}`` (an order / booking / customer id). A trailing digit is a
second value of the same sort (``{name2}`` is another person), ``.lower`` / ``.upper`` change the case.
Plain, unlabelled values that detectors tend to confuse with PII: ``{date}``, ``{time}``, ``{price}``,
``{qty}``, ``{count}``, ``{city}``, ``{day}``, ``{product}``, ``{exp}`` (card expiry), ``{cvc}``, ``{card_end}``.

Templates are split between the dev and held-out halves by their position (even: dev, odd: held-out);
templates with ``{iban}`` are not used for the US, where customers do not have one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    id: str
    role: str  # "user" or "assistant"
    domain: str
    text: str
    locales: tuple[str, ...] | None = None  # None: every locale of the family


def _family(prefix: str, rows: list[tuple]) -> list[Template]:
    return [Template(f"{prefix}-{i:02d}", *row) for i, row in enumerate(rows)]


U, A = "user", "assistant"
GB, US = ("en_GB",), ("en_US",)

EN = _family("en", [
    (U, "bakery", "Hi, I'd like to order {qty} sourdough loaves for {day}. Name is {name}, you can reach me on {phone}."),
    (U, "delivery", "My parcel still hasn't arrived, order {id}. It was meant to go to {address}. Can someone call me? {phone}"),
    (A, "restaurant", ("Thanks {first}! Your table for {count} on {date} at {time} is confirmed, booking reference {id}. "
                      "We'll send a reminder to {email}.")),
    (U, "account", "please update my email to {email} and my number to {phone}, the old ones don't work anymore. thanks, {name}"),
    (U, "complaint", ("I was charged twice on my card ending in {card_end}, the full number is {card}. Order {id}. "
                     "This is really not ok.")),
    (U, "refund", "Could you refund the deposit to my account? IBAN {iban}, account holder {name}."),
    (U, "catering", ("We're planning a party for {count} people on {date}. Venue is {full_address}. "
                    "Contact: {name}, {phone}, {email}")),
    (U, "hairdresser", "hey can i move my appointment with {first2} from {day} to {time}? it's {first}, {phone}"),
    (U, "plumber", "Boiler's leaking again at {street}. I'm in all day, ring me on {phone}. Cheers, {first}", GB),
    (A, "delivery", ("Hi {first}, your order {id} is out for delivery today between {time} and {time2}. "
                    "The driver will call {phone} on arrival.")),
    (U, "bakery", ("Hello,\nI placed an order last week ({id}) and paid with {card}. Can you confirm it went through?\n"
                  "Kind regards,\n{name}")),
    (U, "complaint", "this is {name.lower} from {city}, i ordered the {product} but got the wrong one"),
    (U, "form", "NAME: {name.upper}\nPHONE: {phone}\nEMAIL: {email}\nADDRESS: {full_address}\nNOTES: ring the bell twice"),
    (A, "invoice", "Dear {mr}, we have received your payment of {price}. Your invoice {id} has been sent to {email}."),
    (U, "delivery", "Can you deliver to my office instead? {full_address}. Reception will sign for it."),
    (U, "bakery", "My wife {name2} will pick up the cake on {day}; it's under my name, {name}."),
    (U, "restaurant", "Lost my booking confirmation. Booked for {date}, name {last_first}, tel {phone}."),
    (A, "delivery", ("I've updated the delivery address on booking {id} to {address}. Is {phone} still the best "
                    "number to reach you?")),
    (U, "account", "Pls send the receipt to {email} ta", GB),
    (U, "payment", "Card declined?? tried {card} twice. Can I pay by bank transfer instead, my IBAN is {iban}"),
    (U, "plumber", "Hi there, {first} here. Could the plumber come {day} morning? Address is {full_address}, the blue door."),
    (A, "restaurant", ("Your reservation {id} for {count} guests is cancelled. A refund of {price} will go back to the "
                      "card ending {card_end} within 5 working days.")),
    (U, "account", "Please cancel the standing order, customer no. {id}, {name}, {street}."),
    (U, "care", ("I'm writing on behalf of my mother, {mr}, who lives at {full_address}. She doesn't use email, so "
                "please phone me on {phone}.")),
    (U, "bakery", "Do you do gluten-free birthday cakes? Need one for {date}, budget around {price}."),
    (U, "shop", "What time do you open on {day}? And do you take cards?"),
    (A, "shop", "We're open {time} to {time2} on {day}, and yes, we take all major cards and Apple Pay."),
    (U, "account", "{email} is my new address, please use that for order confirmations from now on"),
    (U, "refund", "hi its {name.lower} again, still waiting on the refund for {id}"),
    (A, "catering", "Thank you, {first}. I've noted {card} as the card for the deposit; you'll be charged {price} on {date}."),
    (U, "refund", "Bank details for the refund: {name}, IBAN {iban}. Thanks"),
    (U, "delivery", ("The courier left my parcel at number {count} instead of {street}. Tracking says order {id} was "
                    "delivered at {time}.")),
    (U, "catering", "We'd like lunch for {count} delivered to {full_address} by {time}. Please invoice {name2}, {email2}."),
    (A, "plumber", ("Hi {first}, {first2} from our team will come round to {street} on {day} between {time} and {time2}. "
                   "Please call {phone2} if you need to reschedule.")),
    (U, "restaurant", "Is it possible to change the name on booking {id} from {name} to {name2}?"),
    (U, "payment", "Sent the transfer from {iban} this morning, reference {id}."),
    (U, "account", "My details: {name}, born {date}, {phone}"),
    (U, "bakery", "Could {name2} collect my order {id}? She'll bring ID."),
    (U, "hairdresser", "Hiya, can I book a cut and colour for Saturday? {first} {phone}", GB),
    (A, "complaint", ("Dear {name}, thank you for telling us about order {id}. We have refunded {price} to your "
                     "original payment method.")),
    (U, "delivery", "Text me at {phone} when the van's 10 min away. Flat's above the chippy, {street}.", GB),
    (U, "account", "Hi, the shipping address on my account ({email}) is wrong, it should be {full_address}"),
    (U, "office", "Ordering for the office: {qty} croissants, {qty2} pain au chocolat. Bill to {name}, {email}, card {card}"),
    (U, "privacy", "Please delete my data. Name {name}, phone {phone}, email {email}."),
    (U, "refund", "Wire the refund to {iban} (acct holder: {name2})"),
    (U, "delivery", "Can you ship to {full_address}? Zip code's right, I checked.", US),
    (U, "class", "Hi! I'm {first} and I booked the {product} class for {date} (ref {id}). Can my friend {name2} join?"),
    (U, "payment", "Use {card} for the deposit please, exp {exp}, security code {cvc}."),
    (U, "hairdresser", "Hey, its {first} - running 10 mins late for my {time}, sorry!! my number's {phone} if u need me"),
    (A, "restaurant", "Hello {mr}, a table for {count} under the name {name} on {date} at {time}. Your booking number is {id}."),
    (U, "delivery", "Hi, please leave the parcel with my neighbour {name2} at {street} if I'm out. Order {id}."),
    (U, "bakery", "Invoice address:\n{name}\n{address_lines}\nVAT not needed. Thanks!"),
    (U, "payment", "The deposit for booking {id} can come from this card: {card}. Call me on {phone} if there's a problem."),
    (A, "account", "Thanks {first}, your email is now {email} and your phone number {phone}."),
    (U, "shop", "Is there parking near the Main Street entrance, or should I use the car park on the High Street?"),
    (A, "bakery", "Our Paris-Brest is {price} and serves 8. Orders need 48 hours' notice; call in or order online."),
    (U, "restaurant", "Table 12 was great last night! Could we get the same one on {day}, {count} people, around {time}?"),
    (A, "delivery", "Orders placed before 2pm ship the same day with DPD or Royal Mail; the tracking link comes by email."),
    (U, "refund", ("Hi, for the refund of the cancelled party please use IBAN {iban}. Name on the account: {name}. "
                  "Booking {id}.")),
    (U, "payment", "Can I pay the rest now? Card number {card}, expiry {exp}. It's for order {id}."),
    (U, "refund", "{first} here - deposit back to {iban} please, not the card"),
    (U, "form", "PAYMENT DETAILS\nName on card: {name.upper}\nCard: {card}\nExp: {exp}"),
    (U, "payment", "Just switched banks, new card is {card}. Receipts to {email} as usual."),
    (U, "refund", "Refund for order {id}: Acc. name {name}, IBAN: {iban}, thank you!"),
    (U, "account", "New to the area - we've moved to {full_address}. Same mobile, {phone}."),
    (U, "payment", "Charge it to my card {card} please, same as last time. {name}"),
])

DE = _family("de", [
    (U, "bakery", ("Hallo, ich möchte für {day} {qty} Brötchen und eine Schwarzwälder Kirschtorte bestellen. "
                  "Abholung gegen {time}. Grüße, {name}")),
    (U, "delivery", ("Guten Tag, meine Bestellung {id} ist immer noch nicht angekommen. Lieferadresse: {full_address}. "
                    "Bitte rufen Sie mich an: {phone}")),
    (A, "restaurant", ("Vielen Dank, {mr}! Ihre Reservierung für {count} Personen am {date} um {time} ist bestätigt. "
                      "Reservierungsnummer: {id}.")),
    (U, "account", "Bitte ändern Sie meine E-Mail-Adresse auf {email}. Meine Kundennummer ist {id}."),
    (U, "complaint", ("Ich habe zweimal bezahlt, Kreditkarte {card}. Bestellnummer {id}. Bitte um Erstattung auf mein "
                     "Konto: IBAN {iban}")),
    (U, "hairdresser", "Hi, kann ich meinen Termin am {day} auf {time} verschieben? LG {first}"),
    (U, "plumber", ("Die Heizung tropft schon wieder. Adresse: {street}, 3. OG links. Ich bin ab {time} zu Hause, "
                   "Handy {phone}.")),
    (A, "delivery", ("Hallo {first}, Ihre Bestellung {id} wird heute zwischen {time} und {time2} geliefert. Der Fahrer "
                    "meldet sich unter {phone}.")),
    (U, "refund", ("Sehr geehrte Damen und Herren,\nich bitte um Rückerstattung von {price} auf folgendes Konto:\n"
                  "Kontoinhaber: {name}\nIBAN: {iban}\nMit freundlichen Grüßen\n{name}")),
    (U, "bakery", "hallo hier ist {name.lower}, ich wollte fragen ob die torte für samstag fertig ist"),
    (U, "form", "NAME: {name.upper}\nTEL: {phone}\nE-MAIL: {email}\nADRESSE: {full_address}"),
    (U, "catering", ("Für die Feier am {date} bräuchten wir Catering für {count} Personen. Lieferung an {full_address}. "
                    "Ansprechpartnerin ist {name2}, erreichbar unter {phone}.")),
    (U, "plumber", "Moin, bin {first}, Nummer {phone}. Könnt ihr Freitag vorbeikommen? Adresse ist {street}."),
    (A, "invoice", ("Guten Tag {mr}, wir haben Ihre Zahlung über {price} erhalten. Die Rechnung {id} wurde an "
                   "{email} gesendet.")),
    (U, "delivery", "Können Sie stattdessen ins Büro liefern? {full_address}, Empfang im EG."),
    (U, "bakery", "Meine Frau {name2} holt den Kuchen am {day} ab, bestellt ist er auf meinen Namen: {name}."),
    (U, "restaurant", "Bestätigung verloren. Reserviert für den {date}, Name: {last_first}, Tel. {phone}"),
    (A, "delivery", ("Ich habe die Lieferadresse für Bestellung {id} auf {address} geändert. Sind Sie weiterhin unter "
                    "{phone} erreichbar?")),
    (U, "bakery", "Gibt es bei euch auch glutenfreie Brote? Und habt ihr am {day} geöffnet?"),
    (A, "shop", "Wir haben {day} von {time} bis {time2} geöffnet. Kartenzahlung ist möglich."),
    (U, "account", "Meine neue Adresse lautet {full_address}, bitte ab sofort dorthin liefern. Kundennr. {id}"),
    (U, "payment", "Bitte buchen Sie die {price} von meiner Karte ab: {card}, gültig bis {exp}."),
    (U, "care", ("Ich schreibe im Auftrag meines Vaters, {mr}, wohnhaft {full_address}. Er hat keine E-Mail, bitte "
                "rufen Sie mich unter {phone} an.")),
    (U, "hairdresser", "Grüße aus {city}! Hier {name}, ich hätte gern einen Termin beim Friseur am {date}."),
    (U, "payment", "Die Überweisung kam von {iban}, Verwendungszweck {id}. Bitte prüfen."),
    (U, "bakery", "Kann {name2} meine Bestellung {id} abholen? Sie bringt ihren Ausweis mit."),
    (A, "plumber", ("Hallo {first}, {first2} aus unserem Team kommt am {day} zwischen {time} und {time2} zu Ihnen "
                   "({street}). Bei Fragen erreichen Sie ihn unter {phone2}.")),
    (U, "privacy", "Bitte löschen Sie meine Daten: {name}, {email}, {phone}."),
    (U, "account", "Rechnung bitte an {email} schicken, nicht an die alte Adresse. Danke, {first}"),
    (U, "restaurant", "Ich möchte den Namen auf der Buchung {id} von {name} auf {name2} ändern."),
    (U, "delivery", ("Paket wurde bei Hausnummer {count} abgegeben statt {street}. Laut Sendungsverfolgung wurde "
                    "Bestellung {id} um {time} zugestellt.")),
    (U, "refund", "Erstattung bitte an: {name2}, {iban}"),
    (U, "plumber", "Servus! Brauche nächste Woche einen Klempner, {full_address}. Ruf mich an: {phone} – {first}"),
    (U, "payment", "Ich zahle lieber per Kreditkarte: {card}. Ist das hier sicher?"),
    (U, "bakery", "Hallo,\nanbei meine Daten für die Bestellung:\n{name}\n{address_lines}\n{phone}"),
    (U, "delivery", "Ist Bestellnummer {id} schon versandt? Hab bis jetzt keine Mail an {email} bekommen."),
    (U, "restaurant", "Tisch für {count} am {date}, auf den Namen {mr}. Rückrufnummer {phone}"),
    (A, "delivery", "Wir konnten Ihre Lieferung an {address} leider nicht zustellen. Wann passt es Ihnen besser?"),
    (U, "complaint", "Die Brötchen heute früh waren leider hart. Bitte um Gutschrift auf Bestellung {id}.\n\nGrüße,\n{name}"),
    (U, "refund", "Bitte die Kaution auf mein Konto {iban} zurücküberweisen, danke."),
    (U, "payment", "Kreditkarte {card} wurde abgelehnt, woran liegt das? Bestell-Nr. {id}"),
    (U, "account", "hab die falsche nummer angegeben, richtig ist {phone}. gruß {first.lower}"),
    (A, "account", "Vielen Dank für Ihre Nachricht, {mr}. Ihre neue Telefonnummer {phone} ist gespeichert."),
    (U, "bakery", "Was kostet eine Hochzeitstorte für {count} Gäste? Lieferung nach {city} wäre super."),
    (U, "account", "Ich heiße {name} und möchte meine Mitgliedschaft kündigen. Kundennummer {id}, E-Mail {email}."),
    (U, "payment", "Bitte Karte {card} für die Anzahlung verwenden, Ablauf {exp}, CVC {cvc}."),
    (U, "hairdresser", "Huhu, {first} hier :) Hat {first2} am {day} noch was frei? Erreichbar unter {phone}"),
    (A, "restaurant", ("Guten Abend {mr}, Ihr Tisch für {count} auf den Namen {name} am {date} um {time} ist reserviert "
                      "(Nr. {id}).")),
    (U, "delivery", "Falls ich nicht da bin, bitte beim Nachbarn {mr2} abgeben, {street}. Auftragsnummer {id}"),
    (U, "catering", "Rechnungsadresse: {name}, {full_address}. Bitte per Mail an {email}."),
    (U, "payment", "Die Anzahlung für Buchung {id} bitte von dieser Karte: {card}. Bei Problemen: {phone}"),
    (A, "account", "Danke {first}, Ihre E-Mail-Adresse ist jetzt {email} und Ihre Telefonnummer {phone}."),
    (U, "refund", "Guten Tag, ich habe storniert (Buchung {id}). Bitte das Geld an {iban} überweisen. {name}"),
    (U, "complaint", ("Servus, {name} hier. Der Kuchen für Bestellung {id} war leider nicht der richtige. "
                     "Bitte melden Sie sich unter {phone}.")),
    (U, "bakery", "Habt ihr am Hauptbahnhof auch eine Filiale? Oder nur in der Altstadt?"),
    (A, "bakery", ("Unsere Filiale am Marktplatz hat Mo–Fr 6:30–18 Uhr geöffnet, samstags bis 13 Uhr. Zahlen können Sie "
                  "bar, mit EC-Karte oder Apple Pay.")),
    (U, "restaurant", "Tisch 12 war super gestern! Können wir am {day} wieder den bekommen, {count} Personen um {time}?"),
    (A, "delivery", "Bestellungen bis 14 Uhr verschicken wir am selben Tag mit DHL; die Sendungsnummer kommt per Mail."),
    (U, "payment", "Neue Karte: {card}. Belege bitte wie immer an {email}."),
    (U, "refund", "Für die Rückzahlung zu Bestellung {id}: Kontoinhaberin {name}, IBAN {iban}. Danke!"),
    (U, "account", "Newsletter bitte abbestellen, Adresse {email}. Danke!"),
    (U, "form", "ZAHLUNG\nKarteninhaber: {name.upper}\nKartennummer: {card}\nGültig bis: {exp}"),
    (U, "account", "Wir sind umgezogen: {full_address}. Handynummer bleibt {phone}."),
    (U, "refund", "{first} hier – Kaution bitte zurück auf {iban}, nicht auf die Karte."),
    (U, "payment", "Kann ich den Rest jetzt zahlen? Kartennummer {card}, Ablauf {exp}, für Auftrag {id}."),
    (U, "payment", "Bitte buchen Sie alles von {card} ab und liefern Sie an {address}."),
])

FR = _family("fr", [
    (U, "bakery", ("Bonjour, je voudrais commander {qty} baguettes et une tarte aux fraises pour {day}. C'est {name}, "
                  "mon numéro : {phone}.")),
    (U, "delivery", ("Ma commande {id} n'est toujours pas arrivée. Adresse de livraison : {full_address}. Merci de me "
                    "rappeler au {phone}.")),
    (A, "restaurant", ("Merci {first} ! Votre réservation pour {count} personnes le {date} à {time} est confirmée. "
                      "Numéro de réservation : {id}.")),
    (U, "account", "Pouvez-vous changer mon adresse e-mail ? La nouvelle est {email}. Mon numéro client : {id}."),
    (U, "complaint", ("J'ai été débité deux fois sur ma carte {card}. Commande n° {id}. Merci de me rembourser sur mon "
                     "compte : IBAN {iban}")),
    (U, "hairdresser", "Coucou, c'est {first}, est-ce que je peux décaler mon rendez-vous de {day} à {time} ?"),
    (U, "plumber", "Le chauffe-eau fuit encore, au {street}, 2e étage. Je suis là à partir de {time}, portable {phone}."),
    (A, "delivery", ("Bonjour {first}, votre commande {id} sera livrée aujourd'hui entre {time} et {time2}. Le livreur "
                    "vous appellera au {phone}.")),
    (U, "refund", ("Madame, Monsieur,\nJe vous prie de bien vouloir rembourser {price} sur le compte suivant :\n"
                  "Titulaire : {name}\nIBAN : {iban}\nCordialement,\n{name}")),
    (U, "bakery", "salut c'est {name.lower}, je voulais savoir si le gâteau pour samedi est prêt"),
    (U, "form", "NOM : {name.upper}\nTÉL : {phone}\nE-MAIL : {email}\nADRESSE : {full_address}"),
    (U, "catering", ("Pour la fête du {date}, il nous faudrait un traiteur pour {count} personnes. Livraison au "
                    "{full_address}. Contact : {name2}, {phone}.")),
    (U, "plumber", "Bonjour, c'est {name} ! Vous pouvez passer vendredi ? J'habite {street}."),
    (A, "invoice", "Bonjour {mr}, nous avons bien reçu votre paiement de {price}. La facture {id} a été envoyée à {email}."),
    (U, "delivery", "Vous pouvez livrer au bureau plutôt ? {full_address}, accueil au rez-de-chaussée."),
    (U, "bakery", "Ma femme, {name2}, viendra chercher le gâteau {day} ; la commande est à mon nom : {name}."),
    (U, "restaurant", "J'ai perdu la confirmation. Réservé pour le {date}, au nom de {last_first}, tél. {phone}"),
    (A, "delivery", ("J'ai modifié l'adresse de livraison de la commande {id} : {address}. Êtes-vous toujours joignable "
                    "au {phone} ?")),
    (U, "bakery", "Vous faites des gâteaux sans gluten ? Vous êtes ouverts {day} ?"),
    (A, "shop", "Nous sommes ouverts {day} de {time} à {time2}. Nous acceptons la carte bancaire."),
    (U, "account", "Ma nouvelle adresse : {full_address}. Merci de livrer là-bas désormais. N° client {id}"),
    (U, "payment", "Vous pouvez débiter {price} sur ma carte {card}, exp. {exp}."),
    (U, "care", ("J'écris pour ma mère, {mr}, qui habite {full_address}. Elle n'a pas d'e-mail, merci de m'appeler "
                "au {phone}.")),
    (U, "hairdresser", "Bonjour de {city} ! Ici {name}, je voudrais un rendez-vous chez le coiffeur le {date}."),
    (U, "payment", "Le virement est parti de {iban}, référence {id}. Vous pouvez vérifier ?"),
    (U, "bakery", "Est-ce que {name2} peut récupérer ma commande {id} ? Elle aura sa carte d'identité."),
    (A, "plumber", ("Bonjour {first}, {first2} de notre équipe passera chez vous ({street}) {day} entre {time} et "
                   "{time2}. En cas de besoin : {phone2}.")),
    (U, "privacy", "Merci de supprimer mes données : {name}, {email}, {phone}."),
    (U, "account", "Envoyez la facture à {email} svp, pas à l'ancienne adresse. Merci, {first}"),
    (U, "restaurant", "Je voudrais changer le nom sur la réservation n° {id} : {name} au lieu de {name2}."),
    (U, "delivery", ("Le colis a été déposé au numéro {count} au lieu du {street}. Le suivi de la commande {id} indique "
                    "livré à {time}.")),
    (U, "refund", "Remboursement à : {name2}, {iban}"),
    (U, "plumber", "Besoin d'un plombier la semaine prochaine, {full_address}. Appelez-moi au {phone} – {first}"),
    (U, "payment", "Je préfère payer par carte : {card}. C'est sécurisé ?"),
    (U, "bakery", "Bonjour,\nvoici mes coordonnées pour la commande :\n{name}\n{address_lines}\n{phone}"),
    (U, "delivery", "La commande {id} est partie ? Je n'ai reçu aucun mail sur {email}."),
    (U, "restaurant", "Une table pour {count} le {date}, au nom de {mr}. Numéro pour rappel : {phone}"),
    (A, "delivery", "Nous n'avons pas pu livrer votre colis au {address}. Quel créneau vous conviendrait ?"),
    (U, "complaint", ("Les croissants de ce matin étaient rassis. Merci de faire un avoir sur la commande {id}.\n\n"
                     "Bien à vous,\n{name}")),
    (U, "refund", "Merci de me rembourser la caution sur mon compte {iban}."),
    (U, "payment", "Ma carte {card} a été refusée, pourquoi ? Commande {id}"),
    (U, "account", "je me suis trompée de numéro, le bon c'est le {phone}. bises, {first.lower}"),
    (A, "account", "Merci pour votre message, {mr}. Votre nouveau numéro {phone} est bien enregistré."),
    (U, "bakery", "Combien coûte une pièce montée pour {count} invités ? Livraison à {city} possible ?"),
    (U, "account", "Je m'appelle {name} et je souhaite résilier mon abonnement. N° client {id}, e-mail {email}."),
    (U, "payment", "Utilisez la carte {card} pour l'acompte, expiration {exp}, cryptogramme {cvc}."),
    (U, "hairdresser", "Coucou ! {first} ici, {first2} a encore une place {day} ? Mon 06 a changé : {phone}"),
    (A, "restaurant", ("Bonsoir {mr}, votre table pour {count} au nom de {name} le {date} à {time} est réservée "
                      "(n° {id}).")),
    (U, "delivery", "Si je suis absente, déposez le colis chez ma voisine {mr2}, {street}. Commande {id}"),
    (U, "catering", "Adresse de facturation : {name}, {full_address}. Merci d'envoyer la facture à {email}."),
    (U, "payment", "Pour l'acompte de la réservation {id}, prenez cette carte : {card}. Un souci ? {phone}"),
    (A, "account", "Merci {first}, votre adresse e-mail est maintenant {email} et votre numéro {phone}."),
    (U, "refund", "Bonjour, j'ai annulé (réservation {id}). Merci de virer le remboursement sur {iban}. {name}"),
    (U, "complaint", ("Bonjour, {name} à l'appareil. Le gâteau de la commande {id} n'était pas le bon. "
                     "Rappelez-moi au {phone} svp.")),
    (U, "bakery", "Vous avez une boutique près de la gare Saint-Lazare ou seulement rue de Rivoli ?"),
    (A, "bakery", "Notre Paris-Brest est à {price} pour 6 personnes. Commandez 48 h à l'avance, en boutique ou en ligne."),
    (U, "restaurant", "La table 12 était parfaite hier ! On peut la réserver {day} pour {count} personnes vers {time} ?"),
    (A, "delivery", "Les commandes passées avant 14h partent le jour même par Colissimo ; le numéro de suivi arrive par e-mail."),
    (U, "payment", "Nouvelle carte : {card}. Les reçus à {email} comme d'habitude."),
    (U, "refund", "Pour le remboursement de la commande {id} : titulaire {name}, IBAN {iban}. Merci !"),
    (U, "account", "Merci de me désinscrire de la newsletter, adresse {email}."),
    (U, "form", "PAIEMENT\nTitulaire de la carte : {name.upper}\nNuméro : {card}\nExpire fin : {exp}"),
    (U, "account", "On a déménagé : {full_address}. Le portable ne change pas, {phone}."),
    (U, "refund", "{first} ici – la caution sur {iban} svp, pas sur la carte."),
    (U, "payment", "Je peux régler le reste maintenant ? Carte {card}, exp. {exp}, pour la commande {id}."),
    (U, "payment", "Débitez tout sur {card} et livrez au {address}, merci."),
])

TEMPLATES: dict[str, list[Template]] = {"en": EN, "de": DE, "fr": FR}


def split_of(template: Template) -> str:
    return "dev" if int(template.id.rsplit("-", 1)[1]) % 2 == 0 else "heldout"
