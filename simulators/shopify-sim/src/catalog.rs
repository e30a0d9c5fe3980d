//! The product catalogue as it changes over the timeline (`[products] enabled = true`).
//!
//! Built from its own RNG stream: the 16 built-in products (same ids, variant ids, SKUs and
//! prices as always, so existing line items keep their meaning) get a product type, a
//! taxonomy category, collections, tags, images and sometimes more variants; generated
//! products are added, some launched mid-timeline, some created as drafts; then sales (price
//! −20 % with `compare_at_price` = the old price, sometimes ended), archives and deletions are
//! scheduled. Every change is a version of the product with the time it happened; a
//! `products/create|update|delete` action is emitted for each. Baskets ask [`Catalog`] what
//! is on sale at a time and at what price.

use chrono::Duration;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::config::ScenarioConfig;
use crate::model::{Action, Product, Subject, Topic, Ts};

/// `status` of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProductStatus {
    Active,
    Draft,
    Archived,
}

impl ProductStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ProductStatus::Active => "active",
            ProductStatus::Draft => "draft",
            ProductStatus::Archived => "archived",
        }
    }
}

/// A product image.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub(crate) id: u64,
    pub(crate) src: String,
    pub(crate) alt: Option<String>,
    pub(crate) position: u32,
}

/// A taxonomy category (`category` of the webhook, `category` of the GraphQL product).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Category {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    pub(crate) full_name: &'static str,
}

/// A variant as of one version of its product.
#[derive(Debug, Clone)]
pub(crate) struct VariantSnap {
    pub(crate) id: u64,
    /// `None`: the variant has no SKU (`"sku": null`).
    pub(crate) sku: Option<String>,
    pub(crate) title: String,
    pub(crate) price: i64,
    pub(crate) compare_at: Option<i64>,
    pub(crate) inventory_quantity: i64,
    pub(crate) grams: u32,
    pub(crate) inventory_item_id: u64,
    pub(crate) image_id: Option<u64>,
    pub(crate) position: u32,
}

/// One version of a product.
#[derive(Debug, Clone)]
pub(crate) struct ProductSnap {
    pub(crate) id: u64,
    pub(crate) title: String,
    pub(crate) handle: String,
    pub(crate) body_html: String,
    pub(crate) vendor: String,
    pub(crate) product_type: Option<String>,
    pub(crate) category: Option<Category>,
    pub(crate) tags: Vec<String>,
    /// Collections the product is in (not part of `products/*` payloads; Admin API only).
    pub(crate) collections: Vec<String>,
    pub(crate) status: ProductStatus,
    pub(crate) created_at: Ts,
    pub(crate) updated_at: Ts,
    pub(crate) published_at: Option<Ts>,
    pub(crate) images: Vec<Image>,
    pub(crate) variants: Vec<VariantSnap>,
}

impl ProductSnap {
    /// The image a variant shows: its own, else the product's first, else none.
    pub(crate) fn image_for(&self, variant: &VariantSnap) -> Option<&Image> {
        variant
            .image_id
            .and_then(|id| self.images.iter().find(|i| i.id == id))
            .or_else(|| self.images.first())
    }
}

/// What a version did to the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Create,
    Update,
    Delete,
}

impl Change {
    fn topic(self) -> Topic {
        match self {
            Change::Create => Topic::ProductsCreate,
            Change::Update => Topic::ProductsUpdate,
            Change::Delete => Topic::ProductsDelete,
        }
    }
}

/// A product's versions in time order (the first is its creation).
#[derive(Debug, Clone)]
pub(crate) struct History {
    pub(crate) versions: Vec<(Ts, Change, ProductSnap)>,
}

impl History {
    /// Version `i` (for rendering an action).
    pub(crate) fn version(&self, i: usize) -> Option<&ProductSnap> {
        self.versions.get(i).map(|v| &v.2)
    }

    /// The version in force at `t` (`None` before creation and after deletion).
    pub(crate) fn at(&self, t: Ts) -> Option<&ProductSnap> {
        let (_, change, snap) = self.versions.iter().rev().find(|(at, _, _)| *at <= t)?;
        (*change != Change::Delete).then_some(snap)
    }

    /// The last version (`None` if the product ends deleted).
    pub(crate) fn last(&self) -> Option<&ProductSnap> {
        let (_, change, snap) = self.versions.last()?;
        (*change != Change::Delete).then_some(snap)
    }

    fn latest(&self) -> &ProductSnap {
        // Every history starts with a creation, so there is always a version.
        &self.versions[self.versions.len() - 1].2
    }

    fn push(&mut self, at: Ts, change: Change, f: impl FnOnce(&mut ProductSnap)) {
        let mut snap = self.latest().clone();
        f(&mut snap);
        snap.updated_at = at;
        self.versions.push((at, change, snap));
        self.versions.sort_by_key(|(at, _, _)| *at);
    }
}

/// The catalogue over the timeline.
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    pub(crate) histories: Vec<History>,
    /// Flattened variant index (the `Line::product` index) → (history, variant position).
    pub(crate) variants: Vec<(usize, usize)>,
    pub(crate) url_template: String,
}

/// Product types of the 16 built-in products, with their collections and category.
const BASE_TYPES: [(&str, &str, Category); 16] = [
    ("Kitchen Tools", "Prep & Tools", TOOLS),
    ("Cookware", "Cookware", COOKWARE),
    ("Kitchen Tools", "Prep & Tools", TOOLS),
    ("Textiles", "Table & Linen", LINEN),
    ("Knives", "Knives", KNIVES),
    ("Tableware", "Coffee & Tea", COFFEE),
    ("Cookware", "Cookware", COOKWARE),
    ("Appliances", "Appliances", APPLIANCES),
    ("Kitchen Tools", "Prep & Tools", TOOLS),
    ("Cookware", "Cookware", COOKWARE),
    ("Knives", "Knives", KNIVES),
    ("Coffee", "Coffee & Tea", COFFEE),
    ("Baking", "Baking", BAKING),
    ("Storage", "Pantry", STORAGE),
    ("Cookware", "Cookware", COOKWARE),
    ("Baking", "Baking", BAKING),
];

const COOKWARE: Category = Category {
    id: "gid://shopify/TaxonomyCategory/hg-11-1",
    name: "Cookware",
    full_name: "Home & Garden > Kitchen & Dining > Cookware",
};
const TOOLS: Category = Category {
    id: "gid://shopify/TaxonomyCategory/hg-11-3",
    name: "Kitchen Tools & Utensils",
    full_name: "Home & Garden > Kitchen & Dining > Kitchen Tools & Utensils",
};
const KNIVES: Category = Category {
    id: "gid://shopify/TaxonomyCategory/hg-11-3-40",
    name: "Kitchen Knives",
    full_name: "Home & Garden > Kitchen & Dining > Kitchen Tools & Utensils > Kitchen Knives",
};
const LINEN: Category = Category {
    id: "gid://shopify/TaxonomyCategory/hg-11-8",
    name: "Table Linens",
    full_name: "Home & Garden > Linens & Bedding > Table Linens",
};
const COFFEE: Category = Category {
    id: "gid://shopify/TaxonomyCategory/hg-11-2-5",
    name: "Coffee Makers & Espresso Machines",
    full_name: "Home & Garden > Kitchen & Dining > Kitchen Appliances > Coffee Makers & Espresso Machines",
};
const APPLIANCES: Category = Category {
    id: "gid://shopify/TaxonomyCategory/hg-11-2",
    name: "Kitchen Appliances",
    full_name: "Home & Garden > Kitchen & Dining > Kitchen Appliances",
};
const BAKING: Category = Category {
    id: "gid://shopify/TaxonomyCategory/hg-11-1-1",
    name: "Bakeware",
    full_name: "Home & Garden > Kitchen & Dining > Cookware & Bakeware > Bakeware",
};
const STORAGE: Category = Category {
    id: "gid://shopify/TaxonomyCategory/hg-11-5",
    name: "Food Storage",
    full_name: "Home & Garden > Kitchen & Dining > Food Storage",
};

/// Titles of generated products (cycled with a number when more are asked for).
const EXTRA_TITLES: [&str; 20] = [
    "Enamel Roasting Pan",
    "Bamboo Cutting Board",
    "Ceramic Pie Dish",
    "Herb Keeper & Stand",
    "Cold Brew Bottle",
    "Silicone Baking Mat",
    "Nakiri Knife 6.5\"",
    "Stoneware Mixing Bowls",
    "Tea Kettle — Matte",
    "Pasta Drying Rack",
    "Cast Iron Grill Press",
    "Butter Crock <French>",
    "Salad Spinner Pro",
    "Flour Sifter & Scoop",
    "Café Apron",
    "Digital Kitchen Scale",
    "Pizza Stone 15\"",
    "Mandoline Slicer",
    "Honey Jar & Dipper",
    "Ramekins (Set of 6)",
];

const VENDORS: [&str; 3] = ["Tillstream Kitchen", "Nordic Hearth", "Maison Cuivre"];
const OPTIONS: [&str; 6] = ["Small", "Medium", "Large", "Black", "White", "Sage"];
const TYPE_POOL: [(&str, &str, Category); 6] = [
    ("Cookware", "Cookware", COOKWARE),
    ("Kitchen Tools", "Prep & Tools", TOOLS),
    ("Baking", "Baking", BAKING),
    ("Knives", "Knives", KNIVES),
    ("Coffee", "Coffee & Tea", COFFEE),
    ("Storage", "Pantry", STORAGE),
];

/// Handle as Shopify derives it: lower-case ASCII words joined by dashes.
fn handle(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        let c = match c {
            'é' | 'è' | 'ê' => 'e',
            'û' | 'ü' => 'u',
            c => c,
        };
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

struct Builder<'a> {
    cfg: &'a ScenarioConfig,
    rng: &'a mut ChaCha8Rng,
    end: Ts,
    next_id: u64,
}

impl Builder<'_> {
    /// Ids for new objects: a range of their own, disjoint from people's and the built-ins'.
    fn id(&mut self) -> u64 {
        self.next_id += 1 + self.rng.random_range(0..7);
        self.next_id
    }

    fn time_between(&mut self, lo: Ts, hi: Ts) -> Ts {
        let span = (hi - lo).num_seconds().max(1);
        lo + Duration::seconds(self.rng.random_range(0..span))
    }

    fn images(&mut self, handle: &str, n: u32, at: Ts) -> Vec<Image> {
        (1..=n)
            .map(|i| Image {
                id: self.id(),
                src: format!(
                    "https://cdn.shopify.com/s/files/1/0548/3800/09/files/{handle}-{i}.jpg?v={}",
                    at.timestamp()
                ),
                alt: (i == 1).then(|| handle.replace('-', " ")),
                position: i,
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn product(
        &mut self,
        id: u64,
        title: &str,
        vendor: &str,
        kind: Option<(&str, &str, Category)>,
        n_images: u32,
        created: Ts,
        variants: Vec<VariantSnap>,
    ) -> ProductSnap {
        let handle = handle(title);
        let images = self.images(&handle, n_images, created);
        let mut variants = variants;
        if images.len() > 1 {
            for (i, v) in variants.iter_mut().enumerate() {
                v.image_id = images.get(i % images.len()).map(|im| im.id);
            }
        }
        let (product_type, collections, category) = match kind {
            Some((t, c, cat)) => {
                let mut cols = vec![c.to_owned()];
                if self.rng.random_bool(0.3) {
                    cols.push("Best Sellers".to_owned());
                }
                (Some(t.to_owned()), cols, Some(cat))
            }
            None => (None, Vec::new(), None),
        };
        let mut tags = vec![handle.split('-').next().unwrap_or("kitchen").to_owned()];
        if self.rng.random_bool(0.4) {
            tags.push("gift".into());
        }
        ProductSnap {
            id,
            title: title.to_owned(),
            body_html: format!("<p>{title} from {vendor}.</p>"),
            handle,
            vendor: vendor.to_owned(),
            product_type,
            category,
            tags,
            collections,
            status: ProductStatus::Active,
            created_at: created,
            updated_at: created,
            published_at: Some(created),
            images,
            variants,
        }
    }

    fn variant(
        &mut self,
        sku: Option<String>,
        title: &str,
        price: i64,
        grams: u32,
        pos: u32,
    ) -> VariantSnap {
        VariantSnap {
            id: self.id(),
            sku,
            title: title.to_owned(),
            price,
            compare_at: None,
            inventory_quantity: self.rng.random_range(0..200),
            grams,
            inventory_item_id: self.id(),
            image_id: None,
            position: pos,
        }
    }
}

impl Catalog {
    /// Builds the catalogue; `base` are the built-in products (their entries keep indexes
    /// `0..base.len()`). Returns the catalogue and the flattened variant list.
    pub(crate) fn build(
        cfg: &ScenarioConfig,
        base: &[Product],
        rng: &mut ChaCha8Rng,
        start: Ts,
        end: Ts,
    ) -> (Catalog, Vec<Product>) {
        let pc = &cfg.products;
        let mut b = Builder {
            cfg,
            rng,
            end,
            next_id: 9_100_000_000_000,
        };
        let mut snaps: Vec<(ProductSnap, Ts)> = Vec::new();
        let initial = |i: usize| start + Duration::seconds(i as i64);
        for (i, p) in base.iter().enumerate() {
            let kind = BASE_TYPES.get(i).copied();
            let mut variants = vec![VariantSnap {
                id: p.variant_id,
                sku: Some(p.sku.clone()),
                title: p.variant_title.clone(),
                price: p.price,
                compare_at: None,
                inventory_quantity: b.rng.random_range(5..200),
                grams: p.grams,
                inventory_item_id: p.variant_id + 17,
                image_id: None,
                position: 1,
            }];
            let more = b.rng.random_range(0..=pc.extra_base_variants);
            for k in 0..more {
                let title = OPTIONS[(i + k as usize) % OPTIONS.len()];
                let sku = format!("{}-{}", p.sku, k + 2);
                let price = p.price + 500 * i64::from(k + 1);
                variants.push(b.variant(Some(sku), title, price, p.grams, k + 2));
            }
            let n_images = b.rng.random_range(1..=3);
            let snap = b.product(
                p.id,
                &p.title,
                &p.vendor,
                kind,
                n_images,
                initial(i),
                variants,
            );
            snaps.push((snap, initial(i)));
        }
        let launch_from = pc.extra_products - pc.launches;
        for n in 0..pc.extra_products {
            let i = n as usize;
            let title = match EXTRA_TITLES.get(i) {
                Some(t) => (*t).to_owned(),
                None => format!(
                    "{} No. {}",
                    EXTRA_TITLES[i % EXTRA_TITLES.len()],
                    i / EXTRA_TITLES.len() + 1
                ),
            };
            let vendor = VENDORS[b.rng.random_range(0..VENDORS.len())];
            let kind = TYPE_POOL[b.rng.random_range(0..TYPE_POOL.len())];
            let created = if n >= launch_from {
                let lo = start + (end - start) / 10;
                let hi = start + (end - start) * 7 / 10;
                b.time_between(lo, hi)
            } else {
                initial(base.len() + i)
            };
            let base_price = b.rng.random_range(15..250) * 100 - 1;
            let n_var = b.rng.random_range(1..=pc.max_variants);
            let sku_root = format!("TX-{:04}", 3000 + n * 7);
            let variants = (0..n_var)
                .map(|k| {
                    let sku = Some(format!("{sku_root}-{}", k + 1));
                    let t = if n_var == 1 {
                        "Default Title"
                    } else {
                        OPTIONS[k as usize % OPTIONS.len()]
                    };
                    b.variant(
                        sku,
                        t,
                        base_price + 300 * i64::from(k),
                        500 + 100 * k,
                        k + 1,
                    )
                })
                .collect();
            let id = b.id();
            let n_images = b.rng.random_range(1..=4);
            let snap = b.product(id, &title, vendor, Some(kind), n_images, created, variants);
            snaps.push((snap, created));
        }
        if pc.odd_products {
            let at = initial(base.len() + pc.extra_products as usize);
            let variants = (1..=100)
                .map(|k| {
                    b.variant(
                        Some(format!("MYS-{k:03}")),
                        &format!("Flavour {k}"),
                        1200 + 10 * i64::from(k),
                        300,
                        k,
                    )
                })
                .collect();
            let id = b.id();
            snaps.push((
                b.product(
                    id,
                    "Mystery Sampler Box",
                    "Nordic Hearth",
                    None,
                    0,
                    at,
                    variants,
                ),
                at,
            ));
            let variants = (1..=2)
                .map(|k| b.variant(None, OPTIONS[k as usize], 900, 150, k))
                .collect();
            let id = b.id();
            let snap = b.product(
                id,
                "Unlabelled Jar",
                "Maison Cuivre",
                Some(TYPE_POOL[5]),
                1,
                at,
                variants,
            );
            snaps.push((snap, at + Duration::seconds(1)));
        }

        let mut histories: Vec<History> = snaps
            .into_iter()
            .map(|(snap, at)| History {
                versions: vec![(at, Change::Create, snap)],
            })
            .collect();
        for h in &mut histories {
            schedule(&mut b, h);
        }
        // Flattened variants: the built-ins' first variants keep indexes 0..16.
        let mut variants: Vec<(usize, usize)> = (0..base.len()).map(|i| (i, 0)).collect();
        for (hi, h) in histories.iter().enumerate() {
            let first = &h.versions[0].2;
            for vi in 0..first.variants.len() {
                if !(hi < base.len() && vi == 0) {
                    variants.push((hi, vi));
                }
            }
        }
        let flat = variants
            .iter()
            .map(|&(hi, vi)| {
                let p = &histories[hi].versions[0].2;
                let v = &p.variants[vi];
                Product {
                    id: p.id,
                    variant_id: v.id,
                    sku: v.sku.clone().unwrap_or_default(),
                    title: p.title.clone(),
                    variant_title: v.title.clone(),
                    vendor: p.vendor.clone(),
                    price: v.price,
                    grams: v.grams,
                }
            })
            .collect();
        let catalog = Catalog {
            histories,
            variants,
            url_template: pc.url_template.clone(),
        };
        (catalog, flat)
    }

    /// Flattened variant indexes on sale at `t` (product active, not deleted).
    pub(crate) fn sellable_at(&self, t: Ts) -> Vec<usize> {
        self.variants
            .iter()
            .enumerate()
            .filter(|(_, (hi, _))| {
                self.histories[*hi]
                    .at(t)
                    .is_some_and(|p| p.status == ProductStatus::Active)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The product and variant behind flattened index `idx`, as of `t`.
    pub(crate) fn variant_at(&self, idx: usize, t: Ts) -> Option<(&ProductSnap, &VariantSnap)> {
        let &(hi, vi) = self.variants.get(idx)?;
        let p = self.histories.get(hi)?.at(t)?;
        Some((p, p.variants.get(vi)?))
    }

    /// Product URL from the template.
    pub(crate) fn url(&self, shop_domain: &str, handle: &str) -> String {
        self.url_template
            .replace("{shop_domain}", shop_domain)
            .replace("{handle}", handle)
    }

    /// One `products/*` action per version, in the shop's own action space.
    pub(crate) fn actions(&self) -> Vec<Action> {
        let mut out = Vec::new();
        let mut seq = 0u32;
        for (hi, h) in self.histories.iter().enumerate() {
            for (vi, (at, change, snap)) in h.versions.iter().enumerate() {
                seq += 1;
                let subject = match change {
                    Change::Delete => Subject::ProductDelete(snap.id),
                    _ => Subject::Product {
                        history: hi,
                        version: vi,
                    },
                };
                out.push(Action {
                    at: *at,
                    topic: change.topic(),
                    subject,
                    group: (1u64 << 62) + u64::from(seq),
                    person: u32::MAX - 1,
                    seq,
                });
            }
        }
        out
    }
}

/// Schedules a product's later life: draft publication, a sale (maybe ended), an archive
/// (maybe followed by deletion) or an outright deletion. Changes after the end are dropped.
fn schedule(b: &mut Builder<'_>, h: &mut History) {
    let pc = &b.cfg.products;
    let created = h.versions[0].0;
    let end = b.end;
    let day = Duration::days(1);
    if created + day * 3 >= end {
        return;
    }
    if b.rng.random_bool(pc.draft_fraction) {
        if let Some(v) = h.versions.first_mut() {
            v.2.status = ProductStatus::Draft;
            v.2.published_at = None;
        }
        let at = created + Duration::hours(b.rng.random_range(24..96));
        if at < end {
            h.push(at, Change::Update, |p| {
                p.status = ProductStatus::Active;
                p.published_at = Some(at);
            });
        }
    }
    let from = created + day * 5;
    if from >= end {
        return;
    }
    if b.rng.random_bool(pc.sale_fraction) {
        let at = b.time_between(from, end);
        h.push(at, Change::Update, |p| {
            for v in &mut p.variants {
                v.compare_at = Some(v.price);
                v.price = (v.price * 8 / 10 / 100) * 100 + 99;
            }
            p.tags.push("sale".into());
        });
        if b.rng.random_bool(0.5) {
            let back = at + Duration::days(b.rng.random_range(3..20));
            if back < end {
                h.push(back, Change::Update, |p| {
                    for v in &mut p.variants {
                        if let Some(full) = v.compare_at.take() {
                            v.price = full;
                        }
                    }
                    p.tags.retain(|t| t != "sale");
                });
            }
        }
    }
    let last = h.versions.last().map_or(from, |v| v.0) + day;
    if last >= end {
        return;
    }
    if b.rng.random_bool(pc.archive_fraction) {
        let at = b.time_between(last, end);
        h.push(at, Change::Update, |p| p.status = ProductStatus::Archived);
        if b.rng.random_bool(0.5) {
            let gone = at + Duration::days(b.rng.random_range(1..10));
            if gone < end {
                h.push(gone, Change::Delete, |_| {});
            }
        }
    } else if b.rng.random_bool(pc.delete_fraction) {
        let at = b.time_between(last, end);
        h.push(at, Change::Delete, |_| {});
    }
}
