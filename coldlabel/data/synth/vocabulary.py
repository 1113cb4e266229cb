"""The synthetic benchmark's vocabulary: taxonomy trees, attribute pools, brand stems, names and review phrases.

Pure data plus the small helpers that only read it (``taxonomy``, ``attribute_pool``, ``is_suffix``,
``title_case``). Nothing here draws random numbers; the generator (``generate.py``) does.
"""
from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------------------------
# Taxonomies. Level 2 -> level 3 -> level-4 leaves. "Name:Product Type" gives the noun used in titles (default:
# the name itself). A level-3 key with an empty list is itself a leaf (a 3-level path, as in the real data).
# ---------------------------------------------------------------------------------------------------------------
BEAUTY_TREE: dict[str, dict[str, list[str]]] = {
    "Skin Care": {
        "Face": ["Cleansers:Facial Cleanser", "Moisturizers:Face Moisturizer", "Toners & Astringents:Facial Toner",
                 "Serums:Face Serum", "Exfoliators & Scrubs:Facial Scrub", "Masks:Face Mask",
                 "Sunscreens:Face Sunscreen", "Night Creams:Night Cream", "Oils:Facial Oil", "Mists:Facial Mist",
                 "BB & CC Creams:BB Cream", "Peels:Facial Peel", "Acne Treatments:Acne Treatment",
                 "Anti-Aging Treatments:Anti-Aging Cream"],
        "Eyes": ["Creams:Eye Cream", "Gels:Eye Gel", "Serums:Eye Serum", "Masks & Patches:Under-Eye Patches",
                 "Puffiness Treatments:Eye De-Puffer"],
        "Body": ["Moisturizers:Body Lotion", "Cleansers:Body Cleanser", "Scrubs:Body Scrub",
                 "Firming Treatments:Firming Cream", "Stretch Mark Treatments:Stretch Mark Cream",
                 "Body Oils:Body Oil", "Butters:Body Butter"],
        "Lips": ["Balms & Moisturizers:Lip Balm", "Treatments:Lip Treatment", "Scrubs:Lip Scrub",
                 "Sunscreens:Lip Sunscreen"],
        "Hands & Nails": ["Hand Creams:Hand Cream", "Cuticle Care:Cuticle Oil", "Nail Treatments:Nail Treatment"],
        "Feet": ["Foot Creams:Foot Cream", "Foot Masks:Foot Peel Mask", "Callus Removers:Callus Remover"],
        "Sun": ["Sunscreens:Sunscreen Lotion", "After Sun Care:After Sun Gel", "Self-Tanners:Self-Tanner",
                "Tanning Oils:Tanning Oil"],
        "Sets & Kits:Skin Care Set": [],
    },
    "Makeup": {
        "Face": ["Foundation:Foundation", "Concealers:Concealer", "Powder:Setting Powder", "Blush:Blush",
                 "Bronzers:Bronzer", "Highlighters:Highlighter", "Primers:Face Primer",
                 "Setting Sprays:Setting Spray", "Contouring:Contour Kit", "Tinted Moisturizers:Tinted Moisturizer"],
        "Eyes": ["Mascara:Mascara", "Eyeliner:Eyeliner", "Eyeshadow:Eyeshadow", "Eyebrow Color:Brow Pencil",
                 "Eye Primers:Eyeshadow Primer", "False Eyelashes:False Lashes",
                 "Eyeshadow Palettes:Eyeshadow Palette", "Lash Enhancers:Lash Serum"],
        "Lips": ["Lipstick:Lipstick", "Lip Gloss:Lip Gloss", "Lip Liners:Lip Liner", "Lip Stains:Lip Stain",
                 "Lip Plumpers:Lip Plumper", "Liquid Lipstick:Liquid Lipstick"],
        "Nails": ["Nail Polish:Nail Polish", "Top & Base Coats:Top Coat", "Nail Polish Removers:Nail Polish Remover",
                  "Nail Art:Nail Art Stickers", "Gel Polish:Gel Nail Polish", "Nail Strengtheners:Nail Strengthener"],
        "Makeup Remover:Makeup Remover": [],
        "Makeup Sets:Makeup Set": [],
    },
    "Hair Care": {
        "Shampoos:Shampoo": [],
        "Conditioners:Conditioner": [],
        "Shampoo & Conditioner Sets:Shampoo and Conditioner Set": [],
        "Dry Shampoos:Dry Shampoo": [],
        "Styling Products": ["Gels:Hair Gel", "Mousses & Foams:Styling Mousse", "Hair Sprays:Hair Spray",
                             "Pomades & Waxes:Pomade", "Creams & Lotions:Styling Cream",
                             "Putties & Clays:Styling Clay", "Heat Protectants:Heat Protectant Spray",
                             "Texturizing Sprays:Texturizing Spray", "Sea Salt Sprays:Sea Salt Spray"],
        "Hair Treatments": ["Hair Oils:Hair Oil", "Hair Masks:Hair Mask", "Leave-In Conditioners:Leave-In Conditioner",
                            "Serums:Hair Serum", "Scalp Treatments:Scalp Treatment",
                            "Hair Loss Products:Hair Regrowth Treatment", "Deep Conditioners:Deep Conditioner"],
        "Hair Coloring": ["Permanent Color:Permanent Hair Color", "Semi-Permanent Color:Semi-Permanent Hair Dye",
                          "Highlighting Kits:Highlighting Kit", "Root Touch-Up:Root Touch-Up",
                          "Color Removers:Hair Color Remover", "Henna:Henna Hair Dye"],
        "Styling Tools": ["Flat Irons:Flat Iron", "Curling Irons:Curling Iron", "Hot Air Brushes:Hot Air Brush",
                          "Hair Dryers:Hair Dryer", "Curling Wands:Curling Wand", "Hot Rollers:Hot Rollers"],
        "Hair Accessories": ["Headbands:Headband", "Clips & Barrettes:Hair Clips", "Elastics & Ties:Hair Ties",
                             "Brushes:Hair Brush", "Combs:Wide-Tooth Comb"],
        "Hair Perms & Relaxers": ["Relaxers:Hair Relaxer", "Texturizers:Texturizer", "Perms:Perm Kit"],
    },
    "Fragrance": {
        "Women": ["Eau de Parfum:Eau de Parfum", "Eau de Toilette:Eau de Toilette", "Body Mists:Body Mist",
                  "Perfume Oils:Perfume Oil", "Solid Perfumes:Solid Perfume", "Gift Sets:Fragrance Gift Set"],
        "Men": ["Eau de Toilette:Eau de Toilette", "Cologne:Cologne", "Aftershave:Aftershave Splash",
                "Deodorants:Scented Deodorant Stick", "Gift Sets:Cologne Gift Set"],
        "Unisex": ["Eau de Parfum:Eau de Parfum", "Eau de Toilette:Eau de Toilette", "Body Sprays:Body Spray"],
        "Children's:Kids Fragrance": [],
    },
    "Bath & Body": {
        "Cleansers": ["Body Washes:Body Wash", "Bar Soaps:Bar Soap", "Shower Gels:Shower Gel",
                      "Liquid Hand Soap:Liquid Hand Soap", "Bath Oils:Bath Oil"],
        "Bath": ["Bath Salts:Bath Salts", "Bubble Bath:Bubble Bath", "Bath Bombs:Bath Bomb",
                 "Bath Pearls & Flakes:Bath Flakes"],
        "Deodorants & Antiperspirants": ["Antiperspirants:Antiperspirant", "Natural Deodorants:Natural Deodorant",
                                         "Body Powders:Body Powder"],
        "Aromatherapy": ["Essential Oils:Essential Oil", "Massage Oils:Massage Oil", "Candles:Aromatherapy Candle"],
        "Bath & Body Sets:Bath Gift Set": [],
    },
    "Tools & Accessories": {
        "Makeup Brushes & Tools": ["Foundation Brushes:Foundation Brush", "Powder Brushes:Powder Brush",
                                   "Eyeshadow Brushes:Eyeshadow Brush", "Brush Sets:Makeup Brush Set",
                                   "Sponges & Applicators:Makeup Sponge", "Eyelash Curlers:Eyelash Curler",
                                   "Brush Cleaners:Brush Cleanser", "Tweezers:Tweezers"],
        "Bags & Cases": ["Cosmetic Bags:Cosmetic Bag", "Train Cases:Train Case", "Toiletry Bags:Toiletry Bag"],
        "Mirrors": ["Compact Mirrors:Compact Mirror", "Vanity Mirrors:Lighted Vanity Mirror"],
        "Nail Tools": ["Nail Clippers:Nail Clipper", "Files & Buffers:Nail File", "Cuticle Pushers:Cuticle Pusher",
                       "Manicure Sets:Manicure Set", "Nail Dryers:UV Nail Lamp"],
        "Skin Care Tools": ["Facial Cleansing Brushes:Facial Cleansing Brush", "Derma Rollers:Derma Roller",
                            "Blotting Papers:Blotting Paper", "Cotton Pads & Rounds:Cotton Rounds",
                            "Blackhead Extractors:Blackhead Extractor", "Facial Rollers:Jade Facial Roller"],
    },
    "Shave & Hair Removal": {
        "Men's": ["Razors & Blades:Men's Razor", "Shaving Creams:Shaving Cream", "Pre-Shaves:Pre-Shave Oil",
                  "Aftershaves:Aftershave Balm", "Beard Oils:Beard Oil", "Beard Trimmers:Beard Trimmer",
                  "Shaving Brushes:Shaving Brush"],
        "Women's": ["Razors & Blades:Women's Razor", "Shaving Gels:Shaving Gel", "Waxing Kits:Wax Kit",
                    "Depilatories:Hair Removal Cream", "Epilators:Epilator"],
    },
}

HEALTH_TREE: dict[str, dict[str, list[str]]] = {
    "Vitamins & Dietary Supplements": {
        "Vitamins": ["Multivitamins:Multivitamin", "Vitamin A:Vitamin A", "Vitamin B12:Vitamin B12",
                     "B-Complex:Vitamin B Complex", "Vitamin C:Vitamin C", "Vitamin D:Vitamin D3",
                     "Vitamin E:Vitamin E", "Vitamin K:Vitamin K2", "Prenatal Vitamins:Prenatal Multivitamin",
                     "Biotin:Biotin", "Folic Acid:Folic Acid"],
        "Minerals": ["Magnesium:Magnesium Supplement", "Calcium:Calcium Supplement", "Zinc:Zinc Supplement",
                     "Iron:Iron Supplement", "Potassium:Potassium Supplement", "Selenium:Selenium Supplement",
                     "Chromium:Chromium Picolinate", "Multiminerals:Multi-Mineral Complex", "Iodine:Iodine Supplement"],
        "Herbal Supplements": ["Turmeric:Turmeric Curcumin", "Ashwagandha:Ashwagandha Root", "Echinacea:Echinacea",
                               "Elderberry:Elderberry Syrup", "Ginkgo Biloba:Ginkgo Biloba",
                               "Milk Thistle:Milk Thistle", "Garlic:Garlic Extract", "Ginseng:Panax Ginseng",
                               "Valerian:Valerian Root",
                               "St. John's Wort:St. John's Wort", "Saw Palmetto:Saw Palmetto",
                               "Green Tea Extract:Green Tea Extract", "Cinnamon:Cinnamon Extract"],
        "Fish Oil & Omegas": ["Fish Oil:Fish Oil", "Krill Oil:Krill Oil", "Flaxseed Oil:Flaxseed Oil",
                              "Algae Omega-3:Vegan Omega-3", "Cod Liver Oil:Cod Liver Oil",
                              "Evening Primrose Oil:Evening Primrose Oil"],
        "Probiotics:Probiotic": [],
        "Antioxidants": ["CoQ10:CoQ10", "Resveratrol:Resveratrol", "Alpha Lipoic Acid:Alpha Lipoic Acid",
                         "Astaxanthin:Astaxanthin", "Glutathione:Glutathione"],
        "Amino Acids": ["L-Arginine:L-Arginine", "L-Glutamine:L-Glutamine", "L-Theanine:L-Theanine",
                        "L-Lysine:L-Lysine", "5-HTP:5-HTP", "NAC:NAC"],
        "Digestive Supplements": ["Digestive Enzymes:Digestive Enzymes", "Fiber Supplements:Psyllium Fiber",
                                  "Apple Cider Vinegar:Apple Cider Vinegar Capsules"],
        "Joint Support": ["Glucosamine:Glucosamine Chondroitin", "Collagen:Collagen Peptides", "MSM:MSM"],
        "Melatonin:Melatonin": [],
    },
    "Sports Nutrition": {
        "Protein": ["Whey Protein:Whey Protein Powder", "Plant Protein:Plant Protein Powder",
                    "Casein Protein:Casein Protein Powder", "Protein Bars:Protein Bar", "Mass Gainers:Mass Gainer"],
        "Performance": ["Pre-Workout:Pre-Workout Powder", "Creatine:Creatine Monohydrate", "BCAAs:BCAA Powder",
                        "Electrolytes:Electrolyte Drink Mix", "Nitric Oxide Boosters:Nitric Oxide Booster",
                        "Beta-Alanine:Beta-Alanine"],
        "Weight Management": ["Fat Burners:Thermogenic Fat Burner", "Meal Replacements:Meal Replacement Shake",
                              "Appetite Control:Appetite Suppressant", "Garcinia Cambogia:Garcinia Cambogia",
                              "Green Coffee Bean Extract:Green Coffee Bean Extract"],
        "Energy": ["Energy Gels:Energy Gel", "Caffeine Pills:Caffeine Tablets"],
    },
    "Medical Supplies & Equipment": {
        "Health Monitors": ["Blood Pressure Monitors:Blood Pressure Monitor", "Thermometers:Digital Thermometer",
                            "Pulse Oximeters:Pulse Oximeter", "Scales:Digital Bathroom Scale",
                            "Blood Glucose Monitors:Blood Glucose Meter", "Heart Rate Monitors:Heart Rate Monitor"],
        "Braces, Splints & Supports": ["Knee Braces:Knee Brace", "Back Braces:Back Support Brace",
                                       "Wrist Braces:Wrist Brace", "Ankle Braces:Ankle Brace",
                                       "Compression Sleeves:Compression Sleeve",
                                       "Posture Correctors:Posture Corrector"],
        "First Aid": ["Bandages:Adhesive Bandages", "Antiseptics:Antiseptic Spray", "First Aid Kits:First Aid Kit",
                      "Gauze:Gauze Pads", "Cold & Hot Packs:Hot Cold Pack", "Burn Care:Burn Gel"],
        "Mobility Aids": ["Canes:Walking Cane", "Walkers:Rolling Walker", "Wheelchairs:Folding Wheelchair"],
        "Daily Living Aids": ["Pill Organizers:Weekly Pill Organizer", "Reachers:Reacher Grabber",
                              "Bath Safety:Shower Chair", "Pill Cutters:Pill Splitter"],
        "Occupational & Physical Therapy": ["Massagers:Handheld Massager", "TENS Units:TENS Unit",
                                            "Foam Rollers:Foam Roller", "Hand Exercisers:Hand Grip Strengthener"],
        "Incontinence:Incontinence Pads": [],
    },
    "Health Care": {
        "Pain Relievers": ["Acetaminophen:Acetaminophen Tablets", "Ibuprofen:Ibuprofen Tablets",
                           "Aspirin:Low Dose Aspirin", "Naproxen:Naproxen Sodium Tablets",
                           "Topical Analgesics:Pain Relief Cream", "Migraine Relief:Migraine Relief Tablets"],
        "Digestion & Nausea": ["Antacids:Antacid Chewables", "Laxatives:Stool Softener",
                               "Anti-Diarrheals:Anti-Diarrheal Caplets", "Gas Relief:Gas Relief Softgels",
                               "Nausea Relief:Motion Sickness Tablets"],
        "Cough & Cold": ["Cough Drops:Cough Drops", "Decongestants:Nasal Decongestant",
                         "Nasal Sprays:Saline Nasal Spray", "Vapor Rubs:Vapor Rub", "Cold Remedies:Zinc Cold Remedy",
                         "Sore Throat:Throat Spray"],
        "Sleep & Snoring": ["Sleep Aids:Nighttime Sleep Aid", "Snoring Aids:Anti-Snoring Mouthpiece",
                            "Sleep Masks:Sleep Mask", "Ear Plugs:Foam Ear Plugs",
                            "White Noise Machines:White Noise Machine"],
        "Allergy": ["Antihistamines:Allergy Relief Tablets", "Allergy Eye Drops:Allergy Eye Drops",
                    "Nasal Allergy Sprays:Nasal Allergy Spray"],
        "Foot Health": ["Insoles:Orthotic Insoles", "Corn & Callus:Corn Cushions", "Anti-Fungal:Antifungal Cream",
                        "Bunion Care:Bunion Corrector"],
        "Women's Health": ["Pregnancy Tests:Pregnancy Test", "Ovulation Tests:Ovulation Test Strips",
                           "Feminine Hygiene:Feminine Wash", "Menstrual Cups:Menstrual Cup",
                           "Yeast Infection:Yeast Infection Treatment"],
        "Eye Care": ["Contact Lens Care:Contact Lens Solution", "Eye Drops:Lubricant Eye Drops",
                     "Reading Glasses:Reading Glasses"],
        "Smoking Cessation:Nicotine Gum": [],
        "Ear Care:Ear Wax Removal Kit": [],
    },
    "Personal Care": {
        "Oral Care": ["Toothpaste:Toothpaste", "Manual Toothbrushes:Toothbrush",
                      "Electric Toothbrushes:Electric Toothbrush", "Dental Floss:Dental Floss",
                      "Mouthwash:Mouthwash", "Teeth Whitening:Teeth Whitening Strips",
                      "Water Flossers:Water Flosser", "Denture Care:Denture Cleanser"],
        "Shaving & Hair Removal": ["Men's Razors:Cartridge Razor", "Women's Razors:Women's Razor",
                                   "Electric Shavers:Electric Shaver", "Shaving Creams:Shaving Cream",
                                   "Hair Clippers:Hair Clipper"],
        "Deodorants & Antiperspirants:Deodorant": [],
        "Lip Care:Lip Balm": [],
    },
    "Household Supplies": {
        "Cleaning": ["All-Purpose Cleaners:All-Purpose Cleaner", "Dishwashing:Dish Soap",
                     "Disinfectant Wipes:Disinfectant Wipes", "Glass Cleaners:Glass Cleaner", "Sponges:Scrub Sponges"],
        "Laundry": ["Detergent:Laundry Detergent", "Fabric Softener:Fabric Softener",
                    "Stain Removers:Stain Remover", "Dryer Sheets:Dryer Sheets"],
        "Paper & Plastic": ["Paper Towels:Paper Towels", "Toilet Paper:Toilet Paper", "Facial Tissues:Facial Tissues",
                            "Trash Bags:Trash Bags", "Food Storage Bags:Food Storage Bags"],
        "Batteries:AA Batteries": [],
        "Air Fresheners": ["Sprays:Air Freshener Spray", "Plug-Ins:Plug-In Air Freshener",
                           "Odor Eliminators:Odor Eliminator"],
    },
    "Baby & Child Care": {
        "Diapering": ["Diapers:Diapers", "Baby Wipes:Baby Wipes", "Diaper Creams:Diaper Rash Cream"],
        "Baby Health": ["Thermometers:Baby Thermometer", "Nasal Aspirators:Nasal Aspirator",
                        "Teething Relief:Teething Gel", "Infant Pain Relief:Infant Fever Reducer"],
        "Children's Vitamins:Kids Multivitamin Gummies": [],
    },
    "Sexual Wellness": {
        "Safer Sex": ["Condoms:Latex Condoms", "Lubricants:Personal Lubricant"],
        "Fertility": ["Fertility Supplements:Fertility Supplement", "Fertility Monitors:Fertility Monitor"],
    },
}

# Attribute pools per level-2 area ("Area" or "Area/Level3" for a narrower override). Each "features" entry is a
# group of mutually exclusive options ("a|b|c"); an item takes 1-3 groups, one option each, plus one size.
_SKIN = {
    "features": ["for dry skin|for oily skin|for sensitive skin|for combination skin|for mature skin",
                 "fragrance-free|lavender scented|citrus scented", "SPF 15|SPF 30|SPF 50", "vegan", "cruelty-free",
                 "paraben-free", "organic", "hypoallergenic", "non-comedogenic",
                 "with hyaluronic acid|with vitamin C|with retinol|with niacinamide|with shea butter|with aloe vera"],
    "sizes": ["0.5 oz", "1 oz", "1.7 oz", "2 oz", "3.4 oz", "8 fl oz", "250 ml", "travel size"],
}
ATTRIBUTES: dict[str, dict[str, list[str]]] = {
    "Skin Care": _SKIN,
    "Makeup": {
        "features": ["matte|satin finish|shimmer", "long-wearing", "waterproof", "vegan", "cruelty-free",
                     "paraben-free", "talc-free", "for sensitive skin|for oily skin|for dry skin",
                     "in Nude|in Black|in Berry|in Coral|in Light Beige|in Medium|in Deep"],
        "sizes": ["0.1 oz", "0.27 oz", "0.35 oz", "0.5 oz", "1 oz", "travel size"],
    },
    "Hair Care": {
        "features": ["for curly hair|for fine hair|for color-treated hair|for damaged hair|for thick hair",
                     "sulfate-free", "silicone-free", "vegan", "organic",
                     "with argan oil|with keratin|with coconut oil|with tea tree oil",
                     "fragrance-free|coconut scented"],
        "sizes": ["8 oz", "12 oz", "16.9 oz", "33.8 oz", "250 ml", "travel size"],
    },
    "Hair Care/Styling Tools": {
        "features": ["ceramic|tourmaline|titanium", "ionic", "dual voltage", "with auto shut-off",
                     "for curly hair|for fine hair|for thick hair", "professional salon grade"],
        "sizes": ["1 inch", "1.25 inch", "1.5 inch", "2 inch", "travel size"],
    },
    "Hair Care/Hair Accessories": {
        "features": ["no-crease|non-slip", "vegan", "for curly hair|for fine hair|for thick hair",
                     "bamboo|stainless steel|silk", "in Black|in Tortoise|in Gold"],
        "sizes": ["pack of 2", "pack of 6", "pack of 12", "set of 3"],
    },
    "Fragrance": {
        "features": ["floral|woody|citrus|oriental|fresh|vanilla", "long-lasting", "vegan", "alcohol-free",
                     "for day|for evening"],
        "sizes": ["1 oz", "1.7 oz", "3.4 oz", "100 ml", "travel size", "rollerball"],
    },
    "Bath & Body": {
        "features": ["lavender|eucalyptus|coconut|rose|unscented", "organic", "vegan", "moisturizing",
                     "for sensitive skin|for dry skin", "aluminum-free", "paraben-free", "cruelty-free"],
        "sizes": ["8 oz", "16 oz", "500 ml", "pack of 3", "travel size"],
    },
    "Tools & Accessories": {
        "features": ["bamboo|stainless steel|synthetic bristle|rose gold", "cruelty-free", "vegan",
                     "for sensitive skin|for all skin types", "latex-free", "with storage case"],
        "sizes": ["travel size", "pack of 2", "set of 5", "set of 12"],
    },
    "Shave & Hair Removal": {
        "features": ["for sensitive skin|for coarse hair", "sandalwood scented|menthol|unscented",
                     "5-blade|3-blade", "cordless|rechargeable", "vegan", "with aloe vera"],
        "sizes": ["6 oz", "100 ml", "pack of 4", "pack of 8"],
    },
    "Vitamins & Dietary Supplements": {
        "features": ["vegan|vegetarian", "gluten-free", "non-GMO", "sugar-free", "organic", "third-party tested",
                     "500 mg|1000 mg|2000 IU|5000 IU", "extra strength", "for women|for men|for kids|for seniors",
                     "chewable|time release|liquid"],
        "sizes": ["60 capsules", "120 capsules", "90 tablets", "180 tablets", "60 softgels", "120 softgels",
                  "60 gummies", "8 fl oz"],
    },
    "Sports Nutrition": {
        "features": ["chocolate flavor|vanilla flavor|unflavored|fruit punch flavor", "gluten-free", "non-GMO",
                     "sugar-free", "vegan", "keto-friendly", "grass-fed", "for women|for men"],
        "sizes": ["1 lb", "2 lb", "5 lb", "30 servings", "12 bars", "60 capsules"],
    },
    "Medical Supplies & Equipment": {
        "features": ["latex-free", "adjustable", "FDA cleared", "for arthritis", "waterproof", "rechargeable",
                     "with carrying case", "one size|large|small/medium"],
        "sizes": ["pack of 1", "pack of 2", "100 count", "50 count"],
    },
    "Health Care": {
        "features": ["extra strength|maximum strength", "non-drowsy", "for kids|for adults", "fast acting",
                     "sugar-free", "dye-free", "drug-free", "cherry flavor|mint flavor"],
        "sizes": ["24 caplets", "50 tablets", "100 tablets", "200 count", "4 fl oz", "pack of 2"],
    },
    "Personal Care": {
        "features": ["fluoride-free", "whitening", "for sensitive teeth|for sensitive skin",
                     "mint flavor|cinnamon flavor", "alcohol-free", "aluminum-free", "unscented|fresh scent",
                     "rechargeable", "vegan"],
        "sizes": ["4 oz", "pack of 2", "pack of 4", "6 count"],
    },
    "Household Supplies": {
        "features": ["unscented|lavender scent|lemon scent|fresh linen scent", "eco-friendly", "plant-based",
                     "hypoallergenic", "free & clear", "concentrated"],
        "sizes": ["pack of 6", "pack of 12", "64 loads", "100 count", "32 oz"],
    },
    "Baby & Child Care": {
        "features": ["hypoallergenic", "fragrance-free", "for newborns|size 1|size 3", "organic", "plant-based",
                     "pediatrician recommended"],
        "sizes": ["pack of 3", "80 count", "4 oz", "2 fl oz"],
    },
    "Sexual Wellness": {
        "features": ["latex-free", "water-based|silicone-based", "ultra thin", "lubricated", "vegan",
                     "hormone-free"],
        "sizes": ["12 count", "36 count", "4 oz", "30 capsules"],
    },
}

ROOTS = {"beauty": "Beauty", "health": "Health & Personal Care"}  # level 1 of every path; the salesRank key
TREES = {"beauty": BEAUTY_TREE, "health": HEALTH_TREE}

# Brand names: stem + ending ("Calora"), optionally + a word of the category ("Calora Labs").
SUFFIX_WORDS = {"beauty": ["Beauty", "Cosmetics", "Botanicals", "Skin", "Labs", "Naturals", "Paris", "Professional"],
                "health": ["Health", "Naturals", "Labs", "Nutrition", "Wellness", "Pharma", "Vitamins", "Care"]}
STEMS = ["Avel", "Bota", "Cal", "Derm", "Elan", "Flor", "Glo", "Hel", "Iri", "Jun", "Kal", "Lum", "Mir", "Nov",
         "Oliv", "Pur", "Quin", "Ros", "Sol", "Ter", "Ull", "Vel", "Wil", "Xen", "Yar", "Zen", "Bel", "Cor", "Dav",
         "Ev", "Fen", "Gra", "Hav", "Iv", "Jas", "Kin", "Lor", "Mon", "Nat", "Orr"]
ENDINGS = ["ine", "ara", "ique", "ora", "elle", "ix", "on", "ea", "is", "ane", "ova", "ani"]
# Product lines that half of the titles carry after the brand ("Calora Daily ...").
PRODUCT_LINES = ["Daily", "Pure", "Ultra", "Advanced", "Essentials", "Pro", "Classic", "Gentle", "Intensive",
                 "Natural", "Max", "Complete", "Clinical", "Everyday"]

# Reviewer names and review text, by star rating.
FIRST_NAMES = ["Mary", "Jennifer", "Linda", "Susan", "Karen", "Lisa", "Emily", "Jessica", "Sarah", "Amanda",
               "Michael", "David", "James", "Robert", "John", "Chris", "Daniel", "Laura", "Nicole", "Rachel",
               "Kim", "Amy", "Angela", "Megan", "Heather", "Brian", "Kevin", "Mark", "Paul", "Anna", "Julie", "Tina"]
OPENERS = {1: ["Very disappointed with this", "Would not buy this", "Sadly this"],
           2: ["Not impressed by this", "I expected more from this", "Meh,"],
           3: ["This is an okay", "Decent", "Average"],
           4: ["I like this", "Good", "Pretty nice"],
           5: ["I love this", "Best", "Excellent"]}
CLOSERS = {1: "It did not work for me at all.", 2: "It didn't really work for me.",
           3: "It does the job but nothing special.", 4: "Works well and I would buy it again.",
           5: "Works great, will definitely buy again!"}
SUMMARIES = {1: ["Terrible", "Waste of money", "Do not buy"], 2: ["Disappointed", "Not for me", "Meh"],
             3: ["It's okay", "Average", "Decent"], 4: ["Nice", "Good product", "Works well"],
             5: ["Love it!", "Five stars", "Holy grail"]}


@dataclass(frozen=True)
class TaxonomyLeaf:
    """One leaf of a synthetic taxonomy (``retrieval/leaves.py``'s ``Leaf`` is something else)."""

    path: tuple[str, ...]  # root first, 3 or 4 levels
    product_type: str  # the noun used in titles ("Face Moisturizer")

    @property
    def area(self) -> str:
        return self.path[1]


def taxonomy(kind: str) -> list[TaxonomyLeaf]:
    """All leaves of the ``beauty`` or ``health`` taxonomy, in definition order."""
    if kind not in TREES:
        raise ValueError(f"unknown taxonomy {kind!r}; expected one of {sorted(TREES)}")
    root, leaves = ROOTS[kind], []

    def split(entry: str) -> tuple[str, str]:
        name, _, ptype = entry.partition(":")
        return name, ptype or name

    for level2, subtree in TREES[kind].items():
        for level3, level4 in subtree.items():
            name3, ptype3 = split(level3)
            if not level4:
                leaves.append(TaxonomyLeaf((root, level2, name3), ptype3))
            for entry in level4:
                name4, ptype4 = split(entry)
                leaves.append(TaxonomyLeaf((root, level2, name3, name4), ptype4))
    return leaves


def attribute_pool(leaf: TaxonomyLeaf) -> dict[str, list[str]]:
    """The ``features`` groups and ``sizes`` an item of this leaf draws from (level-3 override, else its area)."""
    return ATTRIBUTES.get(f"{leaf.path[1]}/{leaf.path[2]}") or ATTRIBUTES[leaf.path[1]]


def is_suffix(option: str) -> bool:
    """Attributes that read after the product noun ("for dry skin", "SPF 30", "500 mg") rather than before it."""
    return option.startswith(("for ", "with ", "in ", "SPF", "size ")) or option[0].isdigit()


def title_case(option: str, keep_first: bool = False) -> str:
    """"fragrance-free" -> "Fragrance-Free"; with keep_first "for dry skin" -> "for Dry Skin"."""
    words = ["-".join(p[:1].upper() + p[1:] for p in w.split("-")) for w in option.split(" ")]
    if keep_first:
        words[0] = option.split(" ")[0]
    return " ".join(words)

