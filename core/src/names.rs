//! Closed sets of names stored as strings (statuses, kinds, roles): the
//! macros that give them `as_str`, `parse`, `ALL` and serde by name. A
//! leaf module: everything may use it, it uses nothing of the crate.

/// Defines a closed set of names stored as strings: `as_str`, `parse` and
/// `ALL`, so unknown names from newer apps can be told apart.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        $crate::names::serde_by_name!($name, |v: $name| v.as_str(), $name::parse);
    };
}
pub(crate) use string_enum;

/// JSON (and any serde format) for a closed set of names: the stored name
/// as a string; an unknown name is an error that lists the known ones.
macro_rules! serde_by_name {
    ($name:ty, $as_str:expr, $parse:expr) => {
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(
                &self,
                serializer: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                let as_str = $as_str;
                serializer.serialize_str(as_str(*self))
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(
                deserializer: D,
            ) -> std::result::Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                let parse = $parse;
                parse(&name)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown name {name:?}")))
            }
        }
    };
}
pub(crate) use serde_by_name;
